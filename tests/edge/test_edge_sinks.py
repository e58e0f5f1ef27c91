"""Sinks: JSON lines (every frame / on change), the CSV log, the overlay drawing, display."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from edge import sinks
from edge.errors import TledgeError
from edge.results import FrameResult
from edge.sinks import CsvSink, JsonLinesSink, Sink, WindowSink, draw_overlay, wants_window


def result(index: int, label: str | None, score: float = 0.9) -> FrameResult:
    top = ((1, label, score), (0, "other", 1 - score)) if label else ()
    return FrameResult(index=index, timestamp=1000.0 + index, top=top, latency_ms=4.25, fps=30.0, dropped=index // 2)


FRAME = np.zeros((60, 80, 3), np.uint8)


def test_frame_result_to_dict_is_json_ready() -> None:
    d = result(3, "cat", 0.75).to_dict()
    assert list(d) == ["index", "timestamp", "label", "score", "top", "latency_ms", "fps", "dropped"]
    assert d["label"] == "cat" and d["score"] == 0.75 and d["top"][0] == {"index": 1, "label": "cat", "score": 0.75}
    assert json.loads(json.dumps(d)) == d


def test_json_lines_every_frame_or_on_change() -> None:
    labels = ["cat", "cat", "dog", "dog", None, "cat"]
    every, changes = io.StringIO(), io.StringIO()
    sinks = [JsonLinesSink(every), JsonLinesSink(changes, on_change=True)]
    assert all(isinstance(s, Sink) for s in sinks)
    for i, label in enumerate(labels):
        for sink in sinks:
            sink.emit(FRAME, result(i, label))
    assert [json.loads(line)["label"] for line in every.getvalue().splitlines()] == labels
    assert [json.loads(line)["index"] for line in changes.getvalue().splitlines()] == [0, 2, 4, 5]


def test_csv_log_has_a_header_once_and_appends(tmp_path) -> None:
    path = tmp_path / "logs" / "run.csv"
    for start in (0, 2):
        sink = CsvSink(path)
        sink.emit(FRAME, result(start, "cat"))
        sink.emit(FRAME, result(start + 1, None))
        sink.close()
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert [r["index"] for r in rows] == ["0", "1", "2", "3"]
    assert rows[0]["label"] == "cat" and rows[0]["top"] == "cat:0.9000;other:0.1000" and rows[1]["label"] == ""


def test_csv_log_in_an_unwritable_place_is_a_clear_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TledgeError, match="Cannot write the CSV log"):
        CsvSink(blocker / "run.csv")


def test_overlay_is_drawn_on_a_copy_in_bgr() -> None:
    frame_rgb = np.zeros((120, 160, 3), np.uint8)
    frame_rgb[..., 0] = 90  # dark red
    drawn = draw_overlay(frame_rgb, result(0, "cat"))
    assert frame_rgb[..., 1:].max() == 0  # the input is untouched
    assert drawn.shape == frame_rgb.shape and drawn[..., 2].max() >= 90  # red went to channel 2 (BGR)
    text_area, elsewhere = drawn[:40, :120], drawn[80:, 100:]
    assert (text_area[..., 1] == 255).any()  # the green label text
    assert elsewhere[..., 1].max() == 0
    below = draw_overlay(frame_rgb, result(0, None))
    assert not np.array_equal(below, drawn)


def test_display_choice(monkeypatch) -> None:
    monkeypatch.setattr(sinks, "opencv_has_gui", lambda: True)  # the headless build: test_pi_platform.py
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert wants_window("auto") is False and wants_window("off") is False
    with pytest.raises(TledgeError, match="no display"):
        wants_window("on")
    monkeypatch.setenv("DISPLAY", ":0")
    assert wants_window("auto") is True and wants_window("off") is False


def test_window_sink_without_a_display_refuses_before_qt_aborts(monkeypatch) -> None:
    """OpenCV's Qt backend aborts the process when it finds no display: refuse first."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(TledgeError, match="--display off"):
        WindowSink("test")
