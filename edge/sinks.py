"""Where results go: a window with an overlay, JSON lines on stdout, a CSV log.

A sink is any object with `emit(frame_rgb, result)` and `close()` (the `Sink`
Protocol). The pipeline calls `emit` from its inference loop, never from the capture
thread, so a slow sink slows the loop (and frames are dropped) but never stalls capture.
A sink that wants the pipeline to stop (the window's q / Esc key) raises `StopPipeline`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

import cv2
import numpy as np

from edge.choices import DisplayMode
from edge.errors import TledgeError
from edge.results import FrameResult

__all__ = [
    "CsvSink",
    "DisplayMode",
    "FrameResult",
    "JsonLinesSink",
    "Sink",
    "StopPipeline",
    "WindowSink",
    "display_available",
    "draw_overlay",
]


class StopPipeline(Exception):
    """Raised by a sink's `emit` to end the run cleanly (e.g. the user closed the window)."""


@runtime_checkable
class Sink(Protocol):
    """Receives every processed frame. Implementations must be cheap or drop work."""

    def emit(self, frame_rgb: np.ndarray, result: FrameResult) -> None: ...

    def close(self) -> None: ...


class ResultListSink:
    """Keeps every `FrameResult` in `results` (not the frames): for scripts that score a
    run afterwards, such as the demo scoring a video against its ground truth."""

    def __init__(self) -> None:
        self.results: list[FrameResult] = []

    def emit(self, frame_rgb: np.ndarray, result: FrameResult) -> None:
        self.results.append(result)

    def close(self) -> None:
        pass


class JsonLinesSink:
    """One JSON object per line (see `FrameResult.to_dict`), on every frame or only when
    the top label changes (`on_change`). Lines are flushed at once, for pipes."""

    def __init__(self, stream: IO[str] | None = None, on_change: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.on_change = on_change
        self._last_label: str | None = None
        self._emitted = False

    def emit(self, frame_rgb: np.ndarray, result: FrameResult) -> None:
        if self.on_change and self._emitted and result.label == self._last_label:
            return
        self._last_label, self._emitted = result.label, True
        try:
            self.stream.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
            self.stream.flush()
        except BrokenPipeError:  # the reader went away (`tledge run ... | head`): end cleanly
            self._silence()
            raise StopPipeline("output closed") from None

    def _silence(self) -> None:
        """Point a broken stdout at /dev/null, so the exit-time flush does not fail again."""
        broken, self.stream = self.stream, open(os.devnull, "w", encoding="utf-8")
        if broken is sys.stdout:
            try:
                os.dup2(self.stream.fileno(), broken.fileno())
            except (OSError, ValueError):
                pass  # not a real file descriptor (a test's capture)

    def close(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._silence()


CSV_FIELDS = ("index", "timestamp", "label", "score", "latency_ms", "fps", "dropped", "top")


class CsvSink:
    """Appends one row per frame to a CSV log (a header is written to a new file).

    A log grows for as long as the device runs, so it is appended to and flushed row by
    row instead of being written atomically: a power cut loses at most the last row.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            is_new = not self.path.exists() or self.path.stat().st_size == 0
            self._file = open(self.path, "a", newline="", encoding="utf-8")
        except OSError as exc:
            raise TledgeError(f"Cannot write the CSV log {self.path}: {exc.strerror or exc}; choose a writable path") from None
        self._writer = csv.writer(self._file)
        if is_new:
            self._writer.writerow(CSV_FIELDS)
            self._file.flush()

    def emit(self, frame_rgb: np.ndarray, result: FrameResult) -> None:
        row = result.to_dict()
        top = ";".join(f"{label}:{score:.4f}" for _, label, score in result.top)
        self._writer.writerow([row["index"], row["timestamp"], row["label"] or "", "" if row["score"] is None else row["score"],
                               row["latency_ms"], row["fps"], row["dropped"], top])
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def display_available() -> bool:
    """True where a window can be opened: on Linux, an X11 or Wayland display is set."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def opencv_has_gui() -> bool:
    """True when this OpenCV build can open windows. The core install uses
    opencv-python-headless (no GUI, so no libGL on a Pi OS Lite image): no windows."""
    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.M)
    return match is not None and match.group(1).upper() != "NONE"


OPENCV_GUI_HINT = (
    "this OpenCV build has no GUI (opencv-python-headless, what `pip install tledge` brings); "
    "use --serve for a live view in the browser, or for a desktop window: pip install opencv-python "
    "(on Debian/Raspberry Pi OS it also needs: sudo apt install libgl1 libglib2.0-0 libx11-6 libxcb1 libxext6 libsm6 libice6)"
)


def wants_window(mode: DisplayMode | str) -> bool:
    """Resolve `--display` to yes/no. `on` without a display or without a GUI-capable
    OpenCV is an error, not a silent no; `auto` then falls back to no window."""
    mode = DisplayMode(mode)
    if mode is DisplayMode.OFF:
        return False
    if display_available():
        if opencv_has_gui():
            return True
        if mode is DisplayMode.ON:
            raise TledgeError(f"--display on was given but {OPENCV_GUI_HINT}")
        return False
    if mode is DisplayMode.ON:
        raise TledgeError("--display on was given but no display is available (DISPLAY is not set); use --display off or auto")
    return False


def _text_scale(width: int) -> float:
    return max(0.4, min(1.2, width / 640.0))


def draw_overlay(frame_rgb: np.ndarray, result: FrameResult) -> np.ndarray:
    """Return a BGR copy of `frame_rgb` with the label, score and FPS drawn on it (pure)."""
    frame_bgr = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    scale = _text_scale(frame_bgr.shape[1])
    thickness = max(1, round(scale * 2))
    line_h = int(28 * scale) + 4  # pixels
    lines = [f"{label} {score:.2f}" for _, label, score in result.top] or ["(below threshold)"]
    if result.decision is not None and result.top and result.decision != result.top[0][1]:
        lines.insert(0, result.decision)  # "unknown": the best class is below its threshold
    lines.append(f"{result.fps:.1f} fps  latency {result.latency_ms:.1f} ms")
    for i, text in enumerate(lines):
        origin = (8, line_h * (i + 1))
        colour = (0, 255, 0) if i == 0 and result.top else (255, 255, 255)
        cv2.putText(frame_bgr, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(frame_bgr, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
    return frame_bgr


_QUIT_KEYS = (ord("q"), 27)  # q or Esc


class WindowSink:
    """Shows each frame with `draw_overlay` in an OpenCV window; q or Esc stops the run."""

    def __init__(self, title: str = "tledge") -> None:
        self.title = title
        if not display_available():  # Qt would abort the whole process, not raise
            raise TledgeError("Cannot open a window: no display is available (DISPLAY is not set); use --display off")
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise TledgeError(
                f"Cannot open a window ({exc.err or exc}); {OPENCV_GUI_HINT}; or use --display off"
            ) from None

    def emit(self, frame_rgb: np.ndarray, result: FrameResult) -> None:
        cv2.imshow(self.title, draw_overlay(frame_rgb, result))
        key = cv2.waitKey(1) & 0xFF
        closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        if key in _QUIT_KEYS or closed:
            raise StopPipeline("window closed")

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass  # already gone
