"""`run --save-uncertain`: the criterion, the sink (rate, cap, faults) and the real command on a video."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge import inbox
from edge.results import FrameResult
from edge.uncertain import Reason, UncertainOptions, UncertainSink, is_uncertain
from edge.cli import app

LABELS = ("red", "green", "blue", "gray")


def result(index: int, scores: list[float], threshold: float = 0.0) -> FrameResult:
    array = np.asarray(scores, np.float32)
    order = np.argsort(-array)
    top = tuple((int(i), LABELS[i], float(array[i])) for i in order[:3] if array[i] >= threshold)
    return FrameResult(index, 1_780_000_000.0 + index, top, 1.0, 30.0, 0, scores=array)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frame(value: int = 200) -> np.ndarray:
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 0] = value
    rgb[10:20, 10:40] = 255
    return rgb


def sink_for(folder: Path, clock: Clock | None = None, **options: object) -> UncertainSink:
    return UncertainSink(UncertainOptions(folder=folder, **options), LABELS, "colours", "ab" * 32, clock=clock or Clock())  # type: ignore[arg-type]


def emit_uncertain(sink: UncertainSink, clock: Clock, count: int, pause_s: float = 0.0) -> None:
    """`count` uncertain frames a minute apart (past the rate limit); `pause_s` (seconds)
    between them gives the writer thread time to save each one."""
    for i in range(count):
        sink.emit(frame(), result(i, [0.6, 0.3, 0.05, 0.05]))
        clock.now += 60
        time.sleep(pause_s)


def test_each_criterion_alone_and_together() -> None:
    assert is_uncertain(0.9, 0.05, threshold=0.5, margin=0.15, flipped=False) == ()
    assert is_uncertain(0.4, 0.05, threshold=0.5, margin=0.15, flipped=False) == (Reason.BELOW_THRESHOLD,)
    assert is_uncertain(0.55, 0.45, threshold=0.5, margin=0.15, flipped=False) == (Reason.SMALL_MARGIN,)
    assert is_uncertain(0.95, 0.01, threshold=0.5, margin=0.15, flipped=True) == (Reason.FLIP,)
    assert is_uncertain(0.3, 0.29, threshold=0.5, margin=0.15, flipped=True) == (Reason.BELOW_THRESHOLD, Reason.SMALL_MARGIN, Reason.FLIP)
    assert is_uncertain(1.0, None, threshold=0.0, margin=0.15, flipped=False) == ()  # one class: no margin
    assert is_uncertain(0.5, 0.5, threshold=0.0, margin=0.0, flipped=False) == ()  # margin 0: off


def test_a_saved_frame_is_a_jpeg_with_its_sidecar_and_nothing_half_written(tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    sink = sink_for(folder, threshold=0.5)
    sink.emit(frame(), result(0, [0.9, 0.05, 0.03, 0.02], 0.5))  # confident: not saved
    sink.emit(frame(180), result(1, [0.45, 0.40, 0.1, 0.05], 0.5))  # below 0.5, margin 0.05
    sink.close()
    assert sink.stats.saved == 1 and sink.stats.uncertain == 1
    listing = inbox.list_frames(folder)
    assert len(listing.frames) == 1 and listing.skipped == ()
    saved = listing.frames[0]
    assert sorted(os.listdir(folder)) == sorted([saved.name, inbox.sidecar_name(saved.name)])  # no temp files
    side = saved.sidecar
    assert side["index"] == 1 and side["image"] == saved.name and side["reasons"] == ["below_threshold", "small_margin"]
    assert side["model"] == {"name": "colours", "sha256": "ab" * 32}
    assert [t["label"] for t in side["top"]] == ["red", "green", "blue", "gray"]
    assert side["scores"] == pytest.approx([0.45, 0.40, 0.1, 0.05], abs=1e-6)
    assert side["decision"] is None and side["criteria"] == {"threshold": 0.5, "margin": 0.15}
    assert side["time"].startswith("2026-") and side["timestamp"] == pytest.approx(1_780_000_001.0)
    image = cv2.imread(str(saved.path))
    assert image.shape == (48, 64, 3)
    assert abs(int(image[30, 50, 2]) - 180) < 8  # red stayed red: RGB in, BGR on disk


def test_a_flip_is_saved_with_the_previous_label(tmp_path: Path) -> None:
    sink = sink_for(tmp_path, margin=0.0)
    sink.emit(frame(), result(0, [0.9, 0.05, 0.03, 0.02]))
    sink.emit(frame(), result(1, [0.9, 0.05, 0.03, 0.02]))
    sink.emit(frame(), result(2, [0.05, 0.9, 0.03, 0.02]))
    sink.close()
    [saved] = inbox.list_frames(tmp_path).frames
    assert saved.sidecar["index"] == 2 and saved.sidecar["reasons"] == ["label_flip"] and saved.sidecar["previous_label"] == "red"


def test_after_a_hot_update_sidecars_name_the_new_model(tmp_path: Path, colour_bundle: Path) -> None:
    clock = Clock()
    sink = sink_for(tmp_path / "inbox", clock, margin=1.0)
    sink.emit(frame(), result(0, [0.6, 0.3, 0.05, 0.05]))
    clock.now += 60
    sink.on_event({"event": "model_update", "status": "rejected", "model": "other@0123456789ab", "bundle": str(tmp_path)})
    sink.on_event({"event": "model_update", "status": "swapped", "model": "colours-v2@feedfacecafe", "bundle": str(colour_bundle)})
    sink.emit(frame(), result(1, [0.6, 0.3, 0.05, 0.05]))
    sink.close()
    manifest = json.loads((colour_bundle / "manifest.json").read_text())
    models = [f.sidecar["model"] for f in inbox.list_frames(tmp_path / "inbox").frames]
    assert models == [{"name": "colours", "sha256": "ab" * 32}, {"name": "colours-v2", "sha256": manifest["model"]["sha256"]}]


def test_the_rate_limit_spaces_saves_evenly(tmp_path: Path) -> None:
    clock = Clock()
    sink = sink_for(tmp_path, clock, margin=1.0, save_per_minute=6.0)  # margin 1: every frame is uncertain
    for i in range(10):  # ten frames within one instant: one save
        sink.emit(frame(), result(i, [0.6, 0.3, 0.05, 0.05]))
    clock.now += 9.9
    sink.emit(frame(), result(10, [0.6, 0.3, 0.05, 0.05]))  # < 10 s later: still limited
    clock.now += 0.2
    sink.emit(frame(), result(11, [0.6, 0.3, 0.05, 0.05]))
    sink.close()
    assert sink.stats.uncertain == 12 and sink.stats.saved == 2 and sink.stats.rate_limited == 10
    assert [f.sidecar["index"] for f in inbox.list_frames(tmp_path).frames] == [0, 11]


def test_the_size_cap_stops_saving_and_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "old-notes.bin").write_bytes(b"x" * 60_000)
    clock = Clock()
    sink = sink_for(tmp_path, clock, margin=1.0, max_mb=0.06)  # 62914 bytes: full already
    with caplog.at_level(logging.WARNING, logger="tledge.edge"):
        emit_uncertain(sink, clock, 3, pause_s=0.05)
        sink.close()
    assert sink.stats.saved == 0 and sink.stats.over_cap == 3
    assert inbox.list_frames(tmp_path).frames == ()
    said = [r.getMessage() for r in caplog.records if "--save-max-mb" in r.getMessage()]
    assert len(said) == 1 and "tledge label" in said[0]


def test_an_unwritable_folder_is_reported_once_and_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    clock = Clock()
    with caplog.at_level(logging.WARNING, logger="tledge.edge"):
        sink = sink_for(blocker / "inbox", clock, margin=1.0)
        emit_uncertain(sink, clock, 4, pause_s=0.05)
        sink.close()
    assert sink.stats.saved == 0 and sink.stats.failed == 4
    said = [r.getMessage() for r in caplog.records if "save-uncertain" in r.getMessage()]
    assert len(said) == 1 and "inference goes on" in said[0] and str(blocker / "inbox") in said[0]


def test_a_writer_that_cannot_keep_up_drops_instead_of_blocking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    sink = sink_for(tmp_path, clock, margin=1.0, queue_size=1)
    gate = threading.Event()
    original = sink._save
    monkeypatch.setattr(sink, "_save", lambda *a: (gate.wait(), original(*a)))  # a disk that stalls until released

    def emit_five() -> None:
        emit_uncertain(sink, clock, 5)

    loop = threading.Thread(target=emit_five)
    try:
        loop.start()
        loop.join(timeout=30)
        assert not loop.is_alive(), "emit waited for the stalled writer"
    finally:
        gate.set()
    sink.close()
    assert sink.stats.saved + sink.stats.busy == 5 and sink.stats.busy >= 3


# -- the real command ------------------------------------------------------------------

runner = CliRunner()


def test_run_saves_the_frames_where_the_label_flips(colour_bundle, colour_video, tmp_path: Path) -> None:
    path, truth = colour_video
    folder = tmp_path / "inbox"
    result_ = runner.invoke(app, ["run", str(colour_bundle), "--source", str(path), "--display", "off", "--top-k", "1",
                                  "--save-uncertain", str(folder), "--uncertain-margin", "0", "--save-rate", "1000000"])
    assert result_.exit_code == 0, result_.output
    assert len(result_.stdout.splitlines()) == len(truth)  # every frame still reported
    frames = inbox.list_frames(folder).frames
    flips = [i for i in range(1, len(truth)) if truth[i] != truth[i - 1]]
    assert [f.sidecar["index"] for f in frames] == flips
    manifest = json.loads((colour_bundle / "manifest.json").read_text())
    assert all(f.sidecar["model"]["sha256"] == manifest["model"]["sha256"] for f in frames)
    assert [f.sidecar["top"][0]["label"] for f in frames] == [truth[i] for i in flips]
    assert f"saved {len(flips)} uncertain frame(s)" in result_.stderr


def test_label_into_without_serve_is_a_usage_error(colour_bundle, colour_video, tmp_path: Path) -> None:
    result_ = runner.invoke(app, ["run", str(colour_bundle), "--source", str(colour_video[0]), "--display", "off",
                                  "--save-uncertain", str(tmp_path / "in"), "--label-into", str(tmp_path / "data")])
    assert result_.exit_code == 2 and "--label-into" in result_.output


def _in_private_mount(tmp_path: Path, mount_opts: str, colour_bundle: Path, video: Path, frames: int) -> subprocess.CompletedProcess:
    """`tledge run --save-uncertain` into a tmpfs of its own (a user + mount namespace), so
    the disk really is full or read-only; skipped where unprivileged namespaces are off."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs {mnt}"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private tmpfs here (unprivileged user namespaces off?): {probe.stderr.strip()}")
    run = [sys.executable, "-m", "edge.cli", "run", str(colour_bundle), "--source", str(video), "--display", "off", "--loop",
           "--max-frames", str(frames), "--save-uncertain", str(mnt / "inbox"), "--uncertain-margin", "1", "--save-rate", "1000000"]
    script = f"mount -t tmpfs -o {mount_opts} tmpfs {mnt} && exec \"$@\""
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *run], capture_output=True, text=True, timeout=120, env=env)


def test_a_full_disk_is_reported_once_and_inference_goes_on(colour_bundle, colour_video, tmp_path: Path) -> None:
    done = _in_private_mount(tmp_path, "size=64k", colour_bundle, colour_video[0], frames=200)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 200  # every frame classified and reported
    assert done.stderr.count("is full") == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_a_read_only_folder_is_reported_once_and_inference_goes_on(colour_bundle, colour_video, tmp_path: Path) -> None:
    done = _in_private_mount(tmp_path, "ro,size=64k", colour_bundle, colour_video[0], frames=60)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 60
    assert done.stderr.count("not writable") == 1, done.stderr
    assert "Traceback" not in done.stderr
