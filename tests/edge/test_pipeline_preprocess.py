"""Preprocessing in the capture thread gives exactly the results of preprocessing in the
inference thread, and really runs off the inference thread."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edge.bundle import load_model_info
from edge.classifier import Classifier
from edge.pipeline import FrameResult, Pipeline, PipelineOptions
from edge.runtime import pipeline_threads
from edge.sinks import ResultListSink
from edge.sources import VideoFileSource


class RecordingClassifier(Classifier):
    """The real classifier, noting which thread preprocesses."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.preprocess_threads: set[str] = set()

    def preprocess(self, frame_rgb: np.ndarray) -> np.ndarray:
        self.preprocess_threads.add(threading.current_thread().name)
        return super().preprocess(frame_rgb)


def _run(bundle: Path, video: Path, in_capture: bool) -> tuple[list[FrameResult], set[str]]:
    classifier = RecordingClassifier(load_model_info(bundle), threads=1)
    sink = ResultListSink()
    Pipeline(classifier, VideoFileSource(video), [sink], PipelineOptions(top_k=3, preprocess_in_capture=in_capture)).run()
    return sink.results, classifier.preprocess_threads


def test_capture_thread_preprocessing_changes_no_result(colour_bundle: Path, colour_video: tuple[Path, list[str]]) -> None:
    video, truth = colour_video
    off_thread, where_off = _run(colour_bundle, video, in_capture=True)
    on_thread, where_on = _run(colour_bundle, video, in_capture=False)
    assert where_off == {"tledge-capture"}
    assert "tledge-capture" not in where_on
    assert len(off_thread) == len(on_thread) == len(truth)
    for a, b in zip(off_thread, on_thread):
        assert a.index == b.index
        assert [(i, label) for i, label, _ in a.top] == [(i, label) for i, label, _ in b.top]
        assert np.allclose([s for *_, s in a.top], [s for *_, s in b.top])
        assert a.latency_ms > 0


def test_pipeline_threads_leave_a_core_for_capture() -> None:
    assert 1 <= pipeline_threads() <= 4
