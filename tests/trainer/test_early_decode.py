"""Decoding that starts before the feature pass (trainer.features.decoder.EarlyDecoder):
the pass gets the same images, in order, whether they were decoded early or not."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.preprocess import ResizePolicy
from trainer.dataset import scan
from trainer.features.decoder import EarlyDecoder, Job, decoded
from trainer.features.views import view_names

from train_helpers import colour_dataset


def _jobs(root: Path) -> list[Job]:
    dataset = scan(root, 0.25, 0.0, 0, None, 1)
    views = view_names(1, 0)
    return [Job(s, views if s in dataset.splits["train"] else views[:1]) for s in dataset.all_samples()]


def _wait(early: EarlyDecoder, seconds: float = 30.0) -> None:
    early._thread.join(seconds)  # the thread ends after its last job
    assert not early._thread.is_alive()


def test_early_images_are_the_ones_the_pass_would_decode(tmp_path: Path) -> None:
    jobs = _jobs(colour_dataset(tmp_path / "d", {"a": 4, "b": 4}))
    (jobs[1].sample.path).write_bytes(b"not an image")  # a failure is handed over as text too
    plain = list(decoded(jobs, 32, ResizePolicy.CENTER_CROP, 2))
    with EarlyDecoder(jobs, 32, ResizePolicy.CENTER_CROP) as early:
        _wait(early)
        taken = list(decoded(jobs, 32, ResizePolicy.CENTER_CROP, 2, early))
        assert not early._done, "every early image was taken"
    assert [j for j, _ in taken] == [j for j, _ in plain]
    assert isinstance(taken[1][1], str) and taken[1][1] == plain[1][1]
    for (_, a), (_, b) in zip(taken, plain):
        if not isinstance(a, str):
            assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_early_decoding_ends_at_its_budget_and_the_pass_decodes_the_rest(tmp_path: Path) -> None:
    jobs = _jobs(colour_dataset(tmp_path / "d", {"a": 6, "b": 6}))
    with EarlyDecoder(jobs, 32, ResizePolicy.CENTER_CROP, budget=3 * 32 * 32 * 3) as early:  # room for 3 single views
        _wait(early)
        assert 0 < len(early._done) <= 3
        early.stop()
        assert len(list(decoded(jobs, 32, ResizePolicy.CENTER_CROP, 1, early))) == len(jobs)
    assert not early._done  # closed: what was left is dropped


def test_a_different_size_is_never_taken(tmp_path: Path) -> None:
    jobs = _jobs(colour_dataset(tmp_path / "d", {"a": 2, "b": 2}))
    with EarlyDecoder(jobs, 32, ResizePolicy.CENTER_CROP) as early:
        _wait(early)
        assert early.take(jobs[0], 48, ResizePolicy.CENTER_CROP) is None
        assert early.take(jobs[0], 32, ResizePolicy.CENTER_CROP) is not None
