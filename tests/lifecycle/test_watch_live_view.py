"""A hot update as the live view shows it: after a swap /api/model names the new model
and its labels; after a refused bundle it keeps the running model and says why. Real
watcher, pipeline and aiohttp server on loopback."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from test_watch import Recorder, run_watching

from edge.deploy import deploy_local
from edge.serve import LiveViewSink, ServeOptions
from lifecycle_models import COLOURS, copy_bundle, tamper_model

pytest.importorskip("aiohttp", reason="the live view needs the [serve] extra")


class KeptOpen:
    """Forwards frames and events to the live view but leaves it serving when the run ends,
    so the test can read what it reports afterwards."""

    def __init__(self, sink: LiveViewSink) -> None:
        self.sink = sink

    def emit(self, frame_rgb: Any, result: Any) -> None:
        self.sink.emit(frame_rgb, result)

    def on_event(self, event: dict[str, Any]) -> None:
        self.sink.on_event(event)

    def close(self) -> None:
        pass


def model_until(sink: LiveViewSink, ready: Any, timeout_s: float = 10.0) -> dict[str, Any]:
    """GET /api/model until `ready(body)` (the update is applied on the server thread)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{sink.port}/api/model", timeout=5) as response:
            body = json.loads(response.read())
        if ready(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def run_with_live_view(models: Path, video: Path, action: Any, bundles_info: Path) -> tuple[dict[str, Any], dict[str, Any], LiveViewSink]:
    from edge.bundle import load_model_info

    sink = LiveViewSink(ServeOptions(port=0), load_model_info(bundles_info))
    try:
        before = model_until(sink, lambda body: True)
        kept = KeptOpen(sink)
        recorder = Recorder({5: action}, stop_after=1, frames_after=10, on_event=kept.on_event)
        recorder_emit = recorder.emit

        def emit(frame_rgb: Any, result: Any) -> None:
            kept.emit(frame_rgb, result)
            recorder_emit(frame_rgb, result)

        recorder.emit = emit  # type: ignore[method-assign]
        run_watching(models, video, recorder)
        (event,) = recorder.events
        after = model_until(sink, lambda body: body.get("update") is not None)
        return before, after | {"_event": event}, sink
    except BaseException:
        sink.close()
        raise


def test_live_view_shows_the_swapped_model_and_its_labels(bundles: dict[str, Path], video: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    deploy_local(bundles["uint8"], models, "v1", lambda line: None)
    before, after, sink = run_with_live_view(models, video, lambda: deploy_local(bundles["other-schema"], models, "v2", lambda line: None),
                                             models / "v1")
    try:
        assert before["labels"] == list(COLOURS) and before["update"] is None
        assert after["_event"]["status"] == "swapped"
        assert after["labels"] == list(COLOURS[:3]) and after["input_size"] == [40, 40]
        update = after["update"]
        assert update["status"] == "swapped" and update["model"] == after["_event"]["model"]
        assert update["bundle"] == "v2" and update["schema_changed"] is True and update["error"] is None
    finally:
        sink.close()


def test_live_view_says_why_a_bundle_was_refused(bundles: dict[str, Path], video: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    deploy_local(bundles["uint8"], models, "v1", lambda line: None)
    bad = copy_bundle(bundles["other-schema"], tmp_path / "bad")
    tamper_model(bad)
    before, after, sink = run_with_live_view(models, video, lambda: shutil.copytree(bad, models / "v2"), models / "v1")
    try:
        assert after["_event"]["status"] == "rejected"
        assert after["labels"] == before["labels"] == list(COLOURS)  # the running model's summary stays
        update = after["update"]
        assert update["status"] == "rejected" and update["error"].startswith("v2/model.tflite does not match its manifest")
        assert update["model"] == after["_event"]["model"]  # the model still running
        assert update["bundle"] == "v2"  # the folder's name, not the device's path
        assert str(tmp_path) not in json.dumps(update)
    finally:
        sink.close()
