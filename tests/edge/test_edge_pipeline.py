"""The real pipeline on generated video files: every frame of a file, the freshest frame
of a live source, smoothing, threshold, --loop, reconnect after a camera is lost, stop."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.bundle import load_model_info
from edge.classifier import Classifier
from edge.errors import SourceError
from edge.pipeline import FrameResult, Pipeline, PipelineOptions, ReconnectPolicy
from edge.sinks import StopPipeline
from edge.sources import CameraSource, VideoFileSource


class Collect:
    """A sink that keeps every result and its frame."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.results: list[FrameResult] = []
        self.frames: list[np.ndarray] = []
        self.delay_s = delay_s
        self.closed = False

    def emit(self, frame_rgb: np.ndarray, result: FrameResult) -> None:
        self.results.append(result)
        self.frames.append(frame_rgb)
        if self.delay_s:
            time.sleep(self.delay_s)

    def close(self) -> None:
        self.closed = True


class PacedCamera(CameraSource):
    """The real OpenCV camera source reading a video file at a camera's pace, forever."""

    def __init__(self, path: Path, fps: float = 50.0) -> None:
        super().__init__(str(path))
        self.period = 1.0 / fps
        self._next = 0.0

    def read(self) -> np.ndarray | None:
        wait = self._next - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._next = time.monotonic() + self.period
        try:
            return super().read()
        except SourceError:  # end of the file: wind back, like a camera that never ends
            self.open()
            return super().read()


@pytest.fixture(scope="module")
def classifier(colour_bundle) -> Classifier:
    return Classifier(load_model_info(colour_bundle), threads=1)


def test_a_video_file_is_processed_frame_by_frame_in_order(classifier, colour_video) -> None:
    path, truth = colour_video
    sink = Collect()
    stats = Pipeline(classifier, VideoFileSource(path), [sink], PipelineOptions(top_k=2)).run()
    assert [r.index for r in sink.results] == list(range(len(truth)))
    assert [r.label for r in sink.results] == truth
    assert stats.frames == stats.captured == len(truth) and stats.dropped == 0
    assert stats.reason == "end of input" and sink.closed
    assert all(len(r.top) == 2 and r.latency_ms > 0 for r in sink.results)
    assert sink.results[-1].fps > 0 and stats.latency_p90_ms >= stats.latency_p50_ms > 0
    # Frames reach the sinks as RGB: the first segment is red.
    assert sink.frames[0][..., 0].mean() > 150 > sink.frames[0][..., 2].mean()


def test_live_source_always_gets_the_freshest_frame(classifier, colour_video) -> None:
    """A camera at 50 fps and a sink taking 80 ms: frames are dropped, none is stale."""
    path, _ = colour_video
    slow = Collect(delay_s=0.08)
    stats = Pipeline(classifier, PacedCamera(path, fps=50), [slow], PipelineOptions(max_frames=8)).run()
    assert stats.frames == 8
    assert stats.dropped > 0 and stats.captured > stats.frames
    drops_seen = [r.dropped for r in slow.results]
    assert drops_seen == sorted(drops_seen) and drops_seen[-1] <= stats.dropped  # a running count
    indices = [r.index for r in slow.results]
    assert indices == sorted(indices) and indices[-1] - indices[0] > len(indices)  # gaps: skipped
    # Frames are not queued behind the slow sink: every frame read was either classified,
    # replaced by a newer one (dropped), or is the one left in the slot when the run ended.
    assert stats.captured - stats.frames - stats.dropped in (0, 1)
    skipped = sum(b - a - 1 for a, b in zip(indices, indices[1:]))
    assert skipped <= stats.dropped  # every frame between two classified ones was dropped


def test_smoothing_is_the_mean_of_the_last_n_score_vectors(classifier, colour_video) -> None:
    path, truth = colour_video
    raw = []
    with VideoFileSource(path) as source:
        while (frame := source.read()) is not None:
            raw.append(classifier.invoke(classifier.preprocess(frame)))
    sink = Collect()
    Pipeline(classifier, VideoFileSource(path), [sink], PipelineOptions(top_k=4, smooth=3)).run()
    for i, result in enumerate(sink.results):
        expected = np.mean(raw[max(0, i - 2) : i + 1], axis=0)
        got = np.zeros(4, np.float32)
        for index, _, score in result.top:
            got[index] = score
        np.testing.assert_allclose(got, expected, atol=1e-6)
    # Right after a class change the smoothed label lags the truth for a frame or two.
    assert sum(r.label != t for r, t in zip(sink.results, truth)) <= 2 * 3


def test_threshold_hides_uncertain_classes(classifier, colour_video) -> None:
    path, _ = colour_video
    sink = Collect()
    Pipeline(classifier, VideoFileSource(path), [sink], PipelineOptions(top_k=4, threshold=0.5)).run()
    assert all(score >= 0.5 for r in sink.results for _, _, score in r.top)
    assert all(len(r.top) <= 1 for r in sink.results)
    empty = [r for r in sink.results if not r.top]
    for r in empty:
        assert r.label is None and r.to_dict()["label"] is None and r.to_dict()["top"] == []


def test_loop_restarts_a_file_until_max_frames(classifier, colour_video) -> None:
    path, truth = colour_video
    sink = Collect()
    stats = Pipeline(classifier, VideoFileSource(path), [sink], PipelineOptions(loop=True, max_frames=len(truth) + 10)).run()
    assert stats.frames == len(truth) + 10
    assert [r.label for r in sink.results[len(truth) :]] == truth[:10]
    assert [r.index for r in sink.results] == list(range(len(truth) + 10))


class FlakyCamera(CameraSource):
    """The real OpenCV camera source; after `fail_after` frames the device vanishes
    (its file is moved away, so the real reopen fails) and comes back `away_s` later."""

    def __init__(self, path: Path, fail_after: int, away_s: float) -> None:
        super().__init__(str(path))
        self.path, self.fail_after, self.away_s = path, fail_after, away_s
        self.reads, self.opens, self.failed = 0, 0, False

    def open(self) -> None:
        self.opens += 1
        super().open()

    def read(self) -> np.ndarray | None:
        if not self.failed and self.reads == self.fail_after:
            self.failed = True
            hidden = self.path.with_suffix(".unplugged")
            self.path.rename(hidden)
            self.comeback = threading.Timer(self.away_s, hidden.rename, args=(self.path,))
            self.comeback.daemon = True  # never keeps the test process alive
            self.comeback.start()
            raise SourceError(f"{self.name} stopped delivering frames")
        self.reads += 1
        try:
            return super().read()
        except SourceError:
            if self._cap is None:
                raise
            # A camera never runs out of frames: at the recording's end it starts again, so
            # only the unplugging above loses the camera, however slowly inference keeps up
            # (under load the capture thread used to reach the end and reconnect twice).
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            return super().read()


def test_a_lost_camera_is_reconnected_with_backoff(classifier, colour_video, tmp_path, caplog) -> None:
    path = tmp_path / "camera.avi"
    shutil.copy(colour_video[0], path)
    source = FlakyCamera(path, fail_after=5, away_s=0.6)
    policy = ReconnectPolicy(initial_delay_s=0.1, max_delay_s=0.2)
    sink = Collect()
    with caplog.at_level(logging.WARNING, logger="tledge.edge"):
        stats = Pipeline(classifier, source, [sink], PipelineOptions(max_frames=12, reconnect=policy)).run()
    assert stats.frames == 12 and stats.reconnects == 1
    assert source.opens >= 3  # the first open, at least one failed attempt, the successful one
    messages = caplog.text
    assert "lost" in messages and "reconnect attempt 1" in messages and "failed" in messages and "reconnected" in messages
    assert [r.index for r in sink.results] == sorted({r.index for r in sink.results})  # no index reused


def test_giving_up_after_max_attempts_ends_the_run(classifier, colour_video, tmp_path) -> None:
    path = tmp_path / "camera.avi"
    shutil.copy(colour_video[0], path)
    source = FlakyCamera(path, fail_after=3, away_s=60)
    policy = ReconnectPolicy(initial_delay_s=0.01, max_delay_s=0.02, max_attempts=3)
    stats = Pipeline(classifier, source, [Collect()], PipelineOptions(reconnect=policy)).run()
    source.comeback.cancel()
    assert stats.frames <= 3 and stats.reason.startswith("source failed")
    assert source.opens == 1 + 3


def test_backoff_doubles_and_is_capped() -> None:
    delays = list(ReconnectPolicy(initial_delay_s=0.5, max_delay_s=3.0, max_attempts=6).delays())
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_stop_from_another_thread_and_from_a_sink(classifier, colour_video) -> None:
    path, _ = colour_video
    sink = Collect()
    pipeline = Pipeline(classifier, PacedCamera(path), [sink], PipelineOptions())

    def stop_once_running() -> None:
        while len(sink.results) < 3:
            time.sleep(0.01)
        pipeline.stop("SIGTERM")

    threading.Thread(target=stop_once_running, daemon=True).start()
    stats = pipeline.run()
    assert stats.reason == "SIGTERM" and stats.frames >= 3

    class Quit(Collect):
        def emit(self, frame_rgb, result):
            super().emit(frame_rgb, result)
            if len(self.results) == 4:
                raise StopPipeline("window closed")

    quit_sink = Quit()
    stats = Pipeline(classifier, VideoFileSource(path), [quit_sink], PipelineOptions()).run()
    assert stats.frames == 4 and stats.reason == "window closed" and quit_sink.closed


def test_open_failure_and_capture_crash_surface_in_run(classifier, colour_video, tmp_path) -> None:
    with pytest.raises(SourceError, match="not found"):
        Pipeline(classifier, VideoFileSource(tmp_path / "missing.avi"), [Collect()]).run()

    class Broken(VideoFileSource):
        def read(self):
            raise RuntimeError("decoder bug")

    with pytest.raises(RuntimeError, match="decoder bug"):
        Pipeline(classifier, Broken(colour_video[0]), [Collect()]).run()


def test_realtime_file_playback_is_paced_at_the_file_rate(classifier, colour_video) -> None:
    path, truth = colour_video  # 20 fps
    sink = Collect()
    options = replace(PipelineOptions(), realtime=True, max_frames=10)
    started = time.monotonic()
    Pipeline(classifier, VideoFileSource(path), [sink], options).run()
    assert time.monotonic() - started >= 9 / 20.0 * 0.9
