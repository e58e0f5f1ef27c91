"""Safe hot update (`edge.watch`): a new bundle is verified beside the running one and
swapped in between two frames; damaged, failing and half-copied bundles stay unused."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from edge.deploy import deploy_local
from edge.pipeline import Pipeline, PipelineOptions
from edge.sinks import StopPipeline
from edge.sources import open_source
from edge.watch import BundleWatcher, WatchOptions
from lifecycle_models import copy_bundle, rewrite_selftest, tamper_model

FAST = WatchOptions(poll_s=0.05, settle_s=0.2, threads=1)


class Recorder:
    """Keeps frames and events in arrival order; runs `actions[n]` at frame n; stops
    `frames_after` frames after the `stop_after`-th event."""

    def __init__(self, actions: dict[int, Callable[[], None]], stop_after: int, frames_after: int = 10,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.lines: list[tuple[str, Any]] = []
        self.actions, self.stop_after, self.frames_after, self.hook = actions, stop_after, frames_after, on_event
        self._countdown: int | None = None

    def emit(self, frame_rgb: Any, result: Any) -> None:
        self.lines.append(("frame", result))
        if result.index in self.actions:
            self.actions.pop(result.index)()
        if self._countdown is not None:
            self._countdown -= 1
            if self._countdown <= 0:
                raise StopPipeline("test done")

    def on_event(self, event: dict[str, Any]) -> None:
        self.lines.append(("event", event))
        if self.hook:
            self.hook(event)
        if sum(kind == "event" for kind, _ in self.lines) >= self.stop_after:
            self._countdown = self.frames_after

    def close(self) -> None:
        pass

    @property
    def frames(self) -> list[Any]:
        return [r for kind, r in self.lines if kind == "frame"]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for kind, e in self.lines if kind == "event"]


def run_watching(model_dir: Path, video: Path, recorder: Recorder, options: WatchOptions = FAST) -> BundleWatcher:
    watcher = BundleWatcher(model_dir, options)
    first = watcher.load_initial()
    pipeline = Pipeline(first.classifier, open_source(str(video)), [recorder], PipelineOptions(loop=True))
    watcher.attach(pipeline)
    timer = threading.Timer(60.0, pipeline.stop, args=("test timeout",))
    timer.start()
    with watcher:
        pipeline.run()
    timer.cancel()
    assert recorder.events, "no event within 60 s"
    return watcher


def assert_no_frame_lost(recorder: Recorder) -> None:
    indices = [r.index for r in recorder.frames]
    assert indices == list(range(len(indices)))


def assert_swapped_between_two_frames(recorder: Recorder, event: dict[str, Any]) -> None:
    """Frames up to the event come from the previous model, every frame after from the new."""
    position = next(i for i, (kind, e) in enumerate(recorder.lines) if kind == "event" and e is event)
    before = [r for kind, r in recorder.lines[:position] if kind == "frame"]
    after = [r for kind, r in recorder.lines[position + 1 :] if kind == "frame"]
    assert before and after
    assert before[-1].index == event["last_frame_before"] and after[0].index == event["last_frame_before"] + 1
    assert {r.model for r in before[-3:]} == {event["previous"]}
    assert {r.model for r in after} == {event["model"]}


def test_bundle_deployed_into_a_watched_folder_is_swapped_in(bundles: dict[str, Path], video: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    deploy_local(bundles["uint8"], models, "v1", lambda line: None)
    recorder = Recorder({5: lambda: deploy_local(bundles["float32"], models, "v2", lambda line: None)}, stop_after=1)
    run_watching(models, video, recorder)
    (event,) = recorder.events
    assert event["status"] == "swapped" and event["bundle"] == str((models / "v2").resolve())
    assert event["schema_changed"] is False and event["changes"] == {}
    assert event["selftest"].startswith("4 reference inputs passed")
    assert_no_frame_lost(recorder)
    assert_swapped_between_two_frames(recorder, event)


def test_other_labels_and_input_size_swap_and_the_event_says_so(bundles: dict[str, Path], video: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    deploy_local(bundles["uint8"], models, "v1", lambda line: None)
    recorder = Recorder({5: lambda: deploy_local(bundles["other-schema"], models, "v2", lambda line: None)}, stop_after=1, frames_after=30)
    run_watching(models, video, recorder)
    (event,) = recorder.events
    assert event["status"] == "swapped" and event["schema_changed"] is True
    assert event["changes"]["labels"]["removed"] == ["gray"] and event["changes"]["labels"]["added"] == []
    assert event["changes"]["input_size"] == {"before": [32, 32], "after": [40, 40]}
    assert_no_frame_lost(recorder)
    assert_swapped_between_two_frames(recorder, event)
    after = recorder.frames[event["last_frame_before"] + 1 :]
    assert {r.label for r in after} <= {"red", "green", "blue"} and len({r.label for r in after}) >= 2


@pytest.mark.parametrize("damage", ["tampered-model", "failing-selftest", "missing-selftest"])
def test_bad_bundle_stays_unused_and_the_old_keeps_running(bundles: dict[str, Path], video: Path, tmp_path: Path, damage: str) -> None:
    models = tmp_path / "models"
    deploy_local(bundles["uint8"], models, "v1", lambda line: None)
    bad = copy_bundle(bundles["float32"], tmp_path / "bad")
    if damage == "tampered-model":
        tamper_model(bad)
        expected = "does not match its manifest"
    elif damage == "failing-selftest":
        rewrite_selftest(bad, outputs_shift=1)
        expected = "the self-test failed on 4 of 4"
    else:
        (bad / "selftest.npz").unlink()
        expected = "selftest.npz is missing"
    # deploy refuses a damaged bundle, so it arrives as a plain copy would (rsync, scp)
    recorder = Recorder({5: lambda: shutil.copytree(bad, models / "v2")}, stop_after=1, frames_after=20)
    watcher = run_watching(models, video, recorder)
    (event,) = recorder.events
    assert event["status"] == "rejected" and expected in event["error"]
    assert event["model"] == watcher.current.tag  # the model still running
    assert {r.model for r in recorder.frames} == {watcher.current.tag}
    assert_no_frame_lost(recorder)


def test_current_symlink_switch(bundles: dict[str, Path], video: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(bundles["uint8"], models / "a")
    shutil.copytree(bundles["float32"], models / "b")
    os.symlink("a", models / "current")

    def switch() -> None:
        os.symlink("b", models / ".current.tmp")
        os.replace(models / ".current.tmp", models / "current")  # atomic switch

    recorder = Recorder({5: switch}, stop_after=1)
    run_watching(models, video, recorder)
    (event,) = recorder.events
    assert event["status"] == "swapped" and event["bundle"] == str((models / "b").resolve())
    assert_no_frame_lost(recorder)
    assert_swapped_between_two_frames(recorder, event)


def test_bundle_folder_replaced_by_rename(bundles: dict[str, Path], video: Path, tmp_path: Path) -> None:
    target = tmp_path / "model"
    shutil.copytree(bundles["uint8"], target)
    staged = copy_bundle(bundles["float32"], tmp_path / ".model.new")

    def replace() -> None:
        os.replace(target, tmp_path / ".model.old")
        os.replace(staged, target)

    recorder = Recorder({5: replace}, stop_after=1)
    run_watching(target, video, recorder)
    (event,) = recorder.events
    assert event["status"] == "swapped" and event["bundle"] == str(target.resolve())
    assert_no_frame_lost(recorder)
    assert_swapped_between_two_frames(recorder, event)


def test_half_copied_bundle_is_never_opened_until_complete(bundles: dict[str, Path], tmp_path: Path) -> None:
    """Deterministic (explicit clock): a copy in progress, as scp leaves it (the manifest
    there, the model half written), is not loaded; stalled past the settle time it is
    reported once; completed, it is verified and swapped in."""
    models = tmp_path / "models"
    shutil.copytree(bundles["uint8"], models / "v1")
    watcher = BundleWatcher(models, WatchOptions(poll_s=1, settle_s=2.0, threads=1))
    watcher.load_initial()
    ready: list[Any] = []
    rejected: list[dict[str, Any]] = []
    watcher.on_ready = lambda loaded, event: ready.append(event)
    watcher.on_rejected = rejected.append

    incoming = models / "v2"
    incoming.mkdir()
    source = bundles["float32"]
    for name in ("manifest.json", "labels.txt", "selftest.npz"):
        shutil.copy2(source / name, incoming / name)
    model = (source / "model.tflite").read_bytes()
    with open(incoming / "model.tflite", "wb") as partial:
        partial.write(model[: len(model) // 3])
        partial.flush()
        watcher.poll(now=0.0)
        watcher.poll(now=1.0)
        partial.write(model[len(model) // 3 : 2 * len(model) // 3])
        partial.flush()
        os.fsync(partial.fileno())
        watcher.poll(now=2.5)  # 2.5 s after the first sighting, but the file changed at 1-2.5 s
        assert ready == [] and rejected == []
        watcher.poll(now=5.0)  # unchanged for 2.5 s: opened, and its checksum refuses it
        assert ready == [] and len(rejected) == 1 and "does not match its manifest" in rejected[0]["error"]
        watcher.poll(now=9.0)
        assert len(rejected) == 1  # reported once per state
        partial.write(model[2 * len(model) // 3 :])
    watcher.poll(now=10.0)
    assert ready == []  # changed again: settling
    watcher.poll(now=12.5)
    assert len(ready) == 1 and ready[0]["status"] == "swapped" and ready[0]["bundle"] == str(incoming.resolve())
    assert watcher.current is not None and watcher.current.path == incoming.resolve()


def test_hidden_staging_folders_are_ignored(bundles: dict[str, Path], tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(bundles["uint8"], models / "v1")
    watcher = BundleWatcher(models, WatchOptions(settle_s=0, threads=1))
    watcher.load_initial()
    seen: list[Any] = []
    watcher.on_ready = lambda loaded, event: seen.append(event)
    watcher.on_rejected = seen.append
    shutil.copytree(bundles["float32"], models / ".v2.deploy-1234")
    watcher.poll(now=0.0)
    watcher.poll(now=10.0)
    assert seen == []


def test_start_uses_the_newest_bundle_that_passes(bundles: dict[str, Path], tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(bundles["uint8"], models / "older")
    newer = copy_bundle(bundles["float32"], models / "newer")
    manifest_path = newer / "manifest.json"
    manifest_path.write_text(manifest_path.read_text().replace("2026-11-30T00:00:00Z", "2026-12-01T00:00:00Z"))
    assert BundleWatcher(models, FAST).load_initial().path == newer.resolve()
    tamper_model(newer)
    assert BundleWatcher(models, FAST).load_initial().path == (models / "older").resolve()


def test_empty_watched_folder_is_a_clear_error(tmp_path: Path) -> None:
    from edge.errors import ModelError

    with pytest.raises(ModelError, match="holds no bundle yet.*tledge deploy"):
        BundleWatcher(tmp_path, FAST).load_initial()


def test_labels_with_watch_is_refused(bundles: dict[str, Path], video: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge.cli import app

    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(bundles["uint8"].parent), "--watch", "--labels", str(labels), "--source", str(video)])
    assert result.exit_code == 1 and "--labels cannot be combined with --watch" in result.stderr
