"""Stable events from per-frame decisions: hysteresis, then start / end events.

A decision (a class, or "unknown") becomes the current state only after it held for
`hold` consecutive frames *and* `min_duration_s` seconds; one odd frame never fires
anything. When the state changes, the class that was current ends (an "end" event) and
the new one starts (a "start" event). "unknown" is a state like any other, but it has no
events of its own: its start is the end of the class before it.

    decisions  bees bees wasp bees bees  -   -   -   ...   (hold=3)
    events                                   ^ start bees, backdated to frame 0

Times are `time.time()` seconds of the frames' capture; indices are the source's frame
numbers. `EventTracker` is pure (no threads, no I/O); `EventsSink` feeds it from the
pipeline and hands its events to the outputs (edge/outputs/), which never block.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import numpy as np

from edge.decision import UNKNOWN_LABEL
from edge.results import FrameResult

log = logging.getLogger("tledge.edge")

__all__ = ["Event", "EventKind", "EventOptions", "EventOutput", "EventTracker", "EventsSink"]


class EventKind(str, Enum):
    START = "start"
    END = "end"


@dataclass(frozen=True)
class EventOptions:
    """Hysteresis: a new decision must hold `hold` frames and `min_duration_s` seconds."""

    hold: int = 3  # frames
    min_duration_s: float = 0.0  # seconds
    device: str = "tledge"

    def __post_init__(self) -> None:
        if self.hold < 1 or self.min_duration_s < 0:
            raise ValueError("hold must be >= 1 frame and min_duration_s >= 0 seconds")


@dataclass(frozen=True)
class Event:
    """A class started or ended being the stable decision."""

    kind: EventKind
    label: str
    score: float  # mean top-1 score over the event's frames so far
    peak_score: float
    start_index: int  # first frame of the event
    start_time: float  # its capture time, time.time() seconds
    index: int  # the frame that fired this event (start: it confirmed; end: the next state's first)
    time: float  # that frame's capture time
    duration_s: float  # end: start -> end; start: how long it held to be confirmed
    frames: int  # frames in the event so far
    seq: int  # 0, 1, 2 ... per run: order and gaps are checkable downstream
    run_id: str
    device: str
    reason: str  # "changed" or, for the last end, why the run stopped (edge.pipeline.StopReason's value)
    decided_at: float = field(default_factory=time.time)  # when the tracker emitted it

    @property
    def id(self) -> str:
        """Unique across runs and devices: for de-duplicating at-least-once deliveries."""
        return f"{self.device}-{self.run_id}-{self.seq}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.kind.value,
            "id": self.id,
            "seq": self.seq,
            "device": self.device,
            "label": self.label,
            "score": round(self.score, 6),
            "peak_score": round(self.peak_score, 6),
            "start_index": self.start_index,
            "start_time": round(self.start_time, 6),
            "index": self.index,
            "time": round(self.time, 6),
            "duration_s": round(self.duration_s, 6),
            "frames": self.frames,
            "reason": self.reason,
            "decided_at": round(self.decided_at, 6),
        }


@dataclass
class _Run:
    """A decision's consecutive frames: where it began, how many, its scores."""

    label: str
    index: int
    time: float
    frames: int = 0
    score_sum: float = 0.0
    peak: float = 0.0

    def add(self, score: float) -> None:
        self.frames += 1
        self.score_sum += score
        self.peak = max(self.peak, score)

    @property
    def mean(self) -> float:
        return self.score_sum / self.frames if self.frames else 0.0


class EventTracker:
    """Turns a stream of (label, score, frame index, time) into start / end events."""

    def __init__(self, options: EventOptions = EventOptions(), run_id: str | None = None) -> None:
        self.options = options
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self.current: _Run | None = None  # the confirmed state
        self._candidate: _Run | None = None
        self._seq = itertools.count()

    @property
    def state(self) -> str | None:
        """The stable decision now (a class or "unknown"); None before the first one."""
        return None if self.current is None else self.current.label

    def feed(self, label: str, score: float, index: int, timestamp: float) -> list[Event]:
        """One frame's decision; returns the events it fires (none, a start, an end, or both)."""
        if self.current is not None and label == self.current.label:
            self.current.add(score)
            self._candidate = None  # an interruption shorter than the hold: forgotten
            return []
        if self._candidate is None or self._candidate.label != label:
            self._candidate = _Run(label, index, timestamp)
        candidate = self._candidate
        candidate.add(score)
        held_s = timestamp - candidate.time
        if candidate.frames < self.options.hold or held_s < self.options.min_duration_s:
            return []
        events = []
        if self.current is not None and self.current.label != UNKNOWN_LABEL:
            events.append(self._event(EventKind.END, self.current, candidate.index, candidate.time, "changed"))
        self.current, self._candidate = candidate, None
        if candidate.label != UNKNOWN_LABEL:
            events.append(self._event(EventKind.START, candidate, index, timestamp, "changed"))
        return events

    def finish(self, index: int, timestamp: float, reason: str = "stopped") -> list[Event]:
        """End the current event (the run is stopping); [] when none is active."""
        current, self.current, self._candidate = self.current, None, None
        if current is None or current.label == UNKNOWN_LABEL:
            return []
        return [self._event(EventKind.END, current, index, timestamp, reason)]

    def _event(self, kind: EventKind, run: _Run, index: int, timestamp: float, reason: str) -> Event:
        return Event(
            kind=kind, label=run.label, score=run.mean, peak_score=run.peak, start_index=run.index, start_time=run.time,
            index=index, time=timestamp, duration_s=max(0.0, timestamp - run.time), frames=run.frames,
            seq=next(self._seq), run_id=self.run_id, device=self.options.device, reason=reason,
        )


class EventOutput(Protocol):
    """Where events go (edge/outputs/). `submit` must return at once: it runs on the
    inference loop's thread. `close` delivers what it can until `deadline` (time.monotonic())."""

    name: str

    def submit(self, event: Event) -> None: ...

    def close(self, deadline: float) -> dict[str, Any]: ...


class EventsSink:
    """A pipeline sink: decisions -> `EventTracker` -> every output.

    `flush_timeout_s` bounds how long `close` (Ctrl-C, end of input) waits for the
    outputs to deliver what is still queued; what is left is counted and reported.
    """

    def __init__(self, outputs: Sequence[EventOutput], options: EventOptions = EventOptions(), flush_timeout_s: float = 5.0) -> None:
        self.outputs = list(outputs)
        self.tracker = EventTracker(options)
        self.flush_timeout_s = flush_timeout_s
        self.summaries: dict[str, dict[str, Any]] = {}
        self._last: tuple[int, float] = (0, time.time())
        self._stop_reason = "stopped"  # until the pipeline says why it ended

    def emit(self, frame_rgb: np.ndarray, result: FrameResult) -> None:
        label = result.label or UNKNOWN_LABEL
        self._last = (result.index, result.timestamp)
        for event in self.tracker.feed(label, result.score or 0.0, result.index, result.timestamp):
            self._publish(event)

    def _publish(self, event: Event) -> None:
        for output in self.outputs:
            try:
                output.submit(event)
            except Exception as exc:  # an output bug must not stop the camera
                log.warning("%s could not take event %s: %s", output.name, event.id, exc)

    def on_stop(self, reason: str) -> None:
        """The pipeline's stop reason (e.g. "end_of_input", "max_frames", "interrupted"):
        the last end event carries it."""
        self._stop_reason = str(getattr(reason, "value", reason))

    def close(self) -> None:
        for event in self.tracker.finish(*self._last, reason=self._stop_reason):
            self._publish(event)
        deadline = time.monotonic() + self.flush_timeout_s
        for output in self.outputs:
            summary = output.close(deadline)
            self.summaries[output.name] = summary
            if summary.get("line"):
                log.info("%s: %s", output.name, summary["line"])
