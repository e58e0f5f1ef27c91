"""Faults while `tledge run` is running: a network camera that is unplugged and comes
back, a camera that stalls, a slow sink, and SIGINT / SIGTERM at any point.

The camera is real as far as tledge can tell: an HTTP MJPEG stream (tests/reliability/
mjpeg_camera.py) read by OpenCV's FFmpeg backend, like an IP camera. The CLI tests run
the real `tledge run` in a subprocess and read its JSON lines and stats line.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mjpeg_camera import MjpegCamera
from tledge_paths import ROOT

from edge.bundle import load_model_info
from edge.classifier import Classifier
from edge.errors import SourceError
from edge.pipeline import Pipeline, PipelineOptions
from edge.results import FrameResult
from edge.sources import CameraSource

LABELS = ["dark", "mid", "bright"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    from tiny_models import image_classifier_tflite, write_bundle

    return write_bundle(tmp_path_factory.mktemp("faults") / "tiny", image_classifier_tflite(len(LABELS), 32), LABELS)


@pytest.fixture()
def camera() -> Iterator[MjpegCamera]:
    cam = MjpegCamera(fps=20.0).start()
    with_source = CameraSource(cam.url)
    try:
        with_source.open()
    except SourceError:
        cam.close()
        pytest.skip("this OpenCV build cannot read HTTP streams (no FFmpeg backend)")
    with_source.close()
    yield cam
    cam.close()


class Run:
    """A real `tledge run` process; its stdout JSON lines are read on a thread."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("DISPLAY", None)
        code = "import sys; from edge.cli import main; sys.argv = ['tledge'] + sys.argv[1:]; main()"
        self.proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[dict] = queue.Queue()
        self.stderr = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def wait_for_results(self, count: int, timeout: float = 60.0) -> list[dict]:
        got, deadline = [], time.monotonic() + timeout
        while len(got) < count:
            try:
                got.append(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"only {len(got)} of {count} results in {timeout} s; stderr: {self.finish(signal.SIGKILL)[-2000:]}") from None
        return got

    def finish(self, signum: int, timeout: float = 30.0) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            _, self.stderr = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate()
        return self.stderr


def run_args(bundle: Path, source: str, *extra: str) -> list[str]:
    return ["run", str(bundle), "--source", source, "--display", "off", "--json", *extra]


# -- a camera that disappears and comes back ------------------------------------------------

def test_unplugged_camera_is_reconnected_and_the_run_goes_on(bundle: Path, camera: MjpegCamera) -> None:
    run = Run(run_args(bundle, camera.url))
    before = run.wait_for_results(5)
    camera.unplug()
    time.sleep(2.0)  # gone for 2 s: reads fail, reopen attempts are refused
    camera.plug()
    after = run.wait_for_results(5, timeout=60)
    stderr = run.finish(signal.SIGTERM)
    assert run.proc.returncode == 0, stderr
    assert "lost" in stderr and "reconnected" in stderr
    assert "stopped (SIGTERM)" in stderr and "1 reconnects" in stderr
    assert "Traceback" not in stderr
    assert after[-1]["index"] > before[-1]["index"]


def test_a_camera_that_never_comes_back_ends_the_run_with_a_reason(bundle: Path, camera: MjpegCamera) -> None:
    run = Run(run_args(bundle, camera.url, "--reconnect-attempts", "2"))
    run.wait_for_results(3)
    camera.unplug()
    try:
        run.proc.wait(timeout=60)  # 0.5 s + 1 s of backoff, then it gives up
    finally:
        stderr = run.finish(signal.SIGKILL)
    assert run.proc.returncode == 1, stderr  # the camera is gone: a failure, with its stats and a remedy
    assert "giving up" in stderr and "stopped (source failed" in stderr and "Traceback" not in stderr
    assert "error:" in stderr and "--reconnect-attempts" in stderr


# -- a camera that stalls -------------------------------------------------------------------

def test_a_short_stall_is_ridden_out(bundle: Path, camera: MjpegCamera) -> None:
    run = Run(run_args(bundle, camera.url))
    before = run.wait_for_results(3)
    camera.stall(True)
    time.sleep(3.0)
    camera.stall(False)
    after = run.wait_for_results(5, timeout=30)
    stderr = run.finish(signal.SIGINT)
    assert run.proc.returncode == 0 and "stopped (SIGINT)" in stderr and "Traceback" not in stderr, stderr
    assert after[-1]["index"] > before[-1]["index"]


def test_stop_during_a_stalled_read_is_prompt_and_prints_stats(bundle: Path, camera: MjpegCamera) -> None:
    run = Run(run_args(bundle, camera.url))
    run.wait_for_results(3)
    camera.stall(True)  # the capture thread now blocks inside OpenCV's read
    time.sleep(1.0)
    started = time.monotonic()
    stderr = run.finish(signal.SIGTERM)
    assert time.monotonic() - started < 10.0  # the 5 s join, not OpenCV's 30 s read timeout
    assert run.proc.returncode == 0, stderr
    assert "stopped (SIGTERM)" in stderr and "Traceback" not in stderr


@pytest.mark.slow
def test_a_long_stall_times_out_and_reconnects(bundle: Path, camera: MjpegCamera) -> None:
    """A stream silent for longer than CameraSource.STREAM_READ_TIMEOUT_S (5 s, instead of
    OpenCV's 30 s default) counts as lost; tledge reconnects when it speaks again."""
    run = Run(run_args(bundle, camera.url))
    before = run.wait_for_results(3)
    camera.stall(True)
    stalled_at = time.monotonic()
    threading.Timer(9.0, camera.stall, args=(False,)).start()
    after = run.wait_for_results(3, timeout=60)
    stderr = run.finish(signal.SIGTERM)
    assert time.monotonic() - stalled_at >= 5.0
    assert "lost" in stderr and "reconnected" in stderr and "Traceback" not in stderr, stderr
    assert after[-1]["index"] > before[-1]["index"]


# -- a slow sink ----------------------------------------------------------------------------

class SlowSink:
    """Takes `delay_s` per frame, like a slow network upload or a sluggish display."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.results: list[FrameResult] = []
        self.ages: list[float] = []  # seconds between capture and this sink seeing the frame

    def emit(self, frame_rgb: np.ndarray, result: FrameResult) -> None:
        self.ages.append(time.time() - result.timestamp)
        self.results.append(result)
        time.sleep(self.delay_s)

    def close(self) -> None:
        pass


def test_a_slow_sink_drops_frames_instead_of_building_a_backlog(bundle: Path, camera: MjpegCamera) -> None:
    classifier = Classifier(load_model_info(bundle), threads=1)
    sink = SlowSink(0.25)  # 4 frames/s against a 20 fps camera
    pipeline = Pipeline(classifier, CameraSource(camera.url), [sink], PipelineOptions(max_frames=16))
    started = time.monotonic()
    stats = pipeline.run()
    elapsed = time.monotonic() - started
    assert stats.frames == 16
    assert stats.dropped >= 16  # most camera frames were never classified ...
    assert max(sink.ages[2:]) < 0.6  # ... so every frame the sink sees is fresh (s), not queued
    assert elapsed < 16 * 0.25 + 5.0


def test_stop_while_a_sink_is_slow_is_prompt(bundle: Path, camera: MjpegCamera) -> None:
    classifier = Classifier(load_model_info(bundle), threads=1)
    sink = SlowSink(0.5)
    pipeline = Pipeline(classifier, CameraSource(camera.url), [sink], PipelineOptions())
    threading.Timer(1.2, pipeline.stop, args=("SIGTERM",)).start()
    started = time.monotonic()
    stats = pipeline.run()
    assert stats.reason == "SIGTERM" and time.monotonic() - started < 1.2 + 0.5 + 2.0


# -- SIGINT / SIGTERM at any point ----------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("delay_s", [0.5, 1.5, 3.0])
def test_a_signal_at_start_up_never_leaves_a_traceback(bundle: Path, camera: MjpegCamera, signum: int, delay_s: float) -> None:
    """Start-up: imports, model load, camera open. Before the pipeline runs there are no
    stats to print; the process must still end promptly without a traceback."""
    run = Run(run_args(bundle, camera.url))
    time.sleep(delay_s)
    stderr = run.finish(signum, timeout=20)
    code = run.proc.returncode
    assert "Traceback" not in stderr, stderr
    if "running" in stderr:  # the pipeline had started: a clean stop with stats
        assert code == 0 and f"stopped ({signal.Signals(signum).name})" in stderr, stderr
    else:  # still starting: Ctrl-C says "interrupted" (130); SIGTERM's default ends it
        assert code in (130, -signal.SIGTERM, 128 + signal.SIGTERM), (code, stderr)


def test_a_second_sigint_during_a_stalled_stop_still_ends_the_process(bundle: Path, camera: MjpegCamera) -> None:
    run = Run(run_args(bundle, camera.url))
    run.wait_for_results(2)
    camera.stall(True)
    time.sleep(0.5)
    run.proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    stderr = run.finish(signal.SIGINT, timeout=15)  # impatient user: Ctrl-C twice
    assert run.proc.returncode in (0, 130), stderr
    assert "Traceback" not in stderr, stderr
