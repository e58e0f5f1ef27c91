"""Shared fixtures: generated data, and ../shared (skipped cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tledge_paths import ROOT, SHARED, WEIGHTS_NAME

__all__ = ["ROOT", "SHARED", "WEIGHTS_NAME"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ../shared folder beside the repo; the test skips when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (real weights, datasets and models live there)")
    return SHARED


@pytest.fixture(scope="session")
def imagenet_weights(shared: Path) -> Path:
    """The real ImageNet MobileNetV2 no-top weights file."""
    path = Path(os.environ.get("TLEDGE_WEIGHTS") or shared / "weights" / WEIGHTS_NAME)
    if not path.is_file():
        pytest.skip(f"real ImageNet weights not found at {path}")
    return path


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny flat folder-per-class dataset: 4 classes x 24 images of 48 px."""
    from trainer.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("synthetic") / "data", per_class=24, size=48, seed=0)


@pytest.fixture(scope="session")
def synthetic_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A generated MJPG video cycling through the synthetic classes, with its truth."""
    from trainer.synthetic import make_video

    return make_video(tmp_path_factory.mktemp("video") / "clip.avi", frames_per_class=10)


def make_tiny_run(data_dir: Path, out_dir: Path, **overrides: object) -> Path:
    """Train a tiny real run (48 px, MobileNetV2 alpha 0.35, weights none, 1 epoch).

    `overrides` replace fields of `HyperParams` (e.g. epochs=2). Returns the run directory,
    which follows the run-directory contract (model.keras, labels.txt, run.json, ...).
    A random backbone's features are tiny, so the model's accuracy is near chance: use it
    to test plumbing, not accuracy.
    """
    from dataclasses import replace

    from trainer.config import (
        CacheMode,
        DataOptions,
        FeatureEngine,
        HyperParams,
        ModelOptions,
        RuntimeOptions,
        TrainOptions,
        WeightsKind,
        WeightsSpec,
    )
    from trainer.train import train

    options = TrainOptions(
        data=DataOptions(data_dir),
        model=ModelOptions(alpha=0.35, image_size=48, weights=WeightsSpec(WeightsKind.NONE)),
        hyper=replace(HyperParams(epochs=1, augment_views=1), **overrides),  # type: ignore[arg-type]
        runtime=RuntimeOptions(engine=FeatureEngine.KERAS, cache=CacheMode.MEMORY, quiet=True),
        out_dir=out_dir,
        name="tiny",
        seed=0,
    )
    return train(options).run_dir


@pytest.fixture(scope="session")
def tiny_run(synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished training run on `synthetic_dataset` (about 10 s on 2 cores), shared by the session.

    Read-only: copy it (shutil.copytree) before changing anything in it.
    """
    return make_tiny_run(synthetic_dataset, tmp_path_factory.mktemp("runs"))
