"""The hand-over from the inference thread to the server thread: references under a lock.

`emit` runs on the inference thread and never waits for the network: it swaps in the
newest result and, while someone watches the video and at most twice per stream period,
a copy of the frame. The server thread takes snapshots whenever it likes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from edge.results import FrameResult


@dataclass(frozen=True)
class Snapshot:
    """What the server thread sees: the newest result, and the newest copied frame with its own result."""

    result: FrameResult | None
    result_seq: int  # grows by one per emitted result
    frame_rgb: np.ndarray | None
    frame_result: FrameResult | None  # the result of `frame_rgb` (drawn on it, sent with it)
    frame_seq: int  # grows by one per copied frame


class FrameBridge:
    """Newest frame and result, handed from the inference thread to the server thread."""

    def __init__(self, copy_period_s: float) -> None:
        self.copy_period_s = copy_period_s  # s between frame copies
        self._lock = threading.Lock()
        self._result: FrameResult | None = None
        self._result_seq = 0
        self._frame: np.ndarray | None = None
        self._frame_result: FrameResult | None = None
        self._frame_seq = 0
        self._frame_time = float("-inf")  # time.monotonic() of the last copied frame, s

    def put(self, frame_rgb: np.ndarray, result: FrameResult, watching: bool) -> None:
        """Inference thread: keep `result`; copy the frame when `watching` and a copy is due."""
        now = time.monotonic()
        frame = None
        if watching and now - self._frame_time >= self.copy_period_s:
            frame = np.array(frame_rgb, dtype=np.uint8, copy=True)
        with self._lock:
            self._result, self._result_seq = result, self._result_seq + 1
            if frame is not None:
                self._frame, self._frame_result = frame, result
                self._frame_seq, self._frame_time = self._frame_seq + 1, now

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._result, self._result_seq, self._frame, self._frame_result, self._frame_seq)
