"""The run loop: a capture thread, the freshest frame, inference, smoothing, sinks.

    source --(capture thread)--> 1-slot buffer --(loop)--> classifier --> smoothing --> sinks

Live sources (cameras, streams) always hand the loop the freshest frame: a frame the
loop has not taken yet is replaced and counted as dropped, so latency never builds up.
A video file is read as a file: every frame is processed, in order, unless
`realtime=True` (then it is paced at its own frame rate and frames drop like a camera's).

A live source that fails is reopened with exponential backoff (said on stderr through
the "tledge.edge" logger); the end of a file stops the run, or starts it again with
`loop=True`. `stop()` (wired to SIGINT / SIGTERM by `stop_on_signals`) ends it cleanly;
`run()` returns the `RunStats` for the final stats line. Sinks with an
`on_stop(reason)` method learn why the run ended (a `StopReason`) before they are closed.

`swap(classifier)` (thread-safe; `edge/watch.py` calls it) replaces the model between two
frames; a frame the capture thread prepared for the old model is prepared again.
Sinks with an `on_event(event)` method also receive events (`post_event`, swaps),
delivered from the loop thread between frames.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from edge.decision import DecisionPolicy
from edge.errors import DecisionError, SourceError
from edge.results import FrameResult
from edge.sinks import Sink, StopPipeline
from edge.sources import Source
from edge.stats import percentile

__all__ = ["FrameResult", "Pipeline", "PipelineOptions", "ReconnectPolicy", "RunStats", "StopReason", "stop_on_signals"]

log = logging.getLogger("tledge.edge")


class FrameClassifier(Protocol):
    """The three stages the loop needs (`edge.classifier.Classifier` has them)."""

    def preprocess(self, frame_rgb: np.ndarray) -> np.ndarray: ...

    def invoke(self, tensor: np.ndarray) -> np.ndarray: ...

    def postprocess(self, scores: np.ndarray, top_k: int = 5) -> tuple[tuple[int, str, float], ...]: ...


class StopReason(str, Enum):
    """Why a run ended, as a stable code (the stats line says it in words)."""

    END_OF_INPUT = "end_of_input"  # a video file or image folder was read to its end
    MAX_FRAMES = "max_frames"
    INTERRUPTED = "interrupted"  # SIGINT (Ctrl-C) or SIGTERM, through stop_on_signals
    SOURCE_FAILED = "source_failed"  # could not be read or reopened
    SINK = "sink"  # a sink asked to stop (window closed, output pipe closed)
    ERROR = "error"  # an exception ended the loop
    STOPPED = "stopped"  # stop() called by the program (a supervisor, a test)


@dataclass(frozen=True)
class ReconnectPolicy:
    """Exponential backoff for a lost live source: initial, doubled, capped (seconds)."""

    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_attempts: int | None = None  # None: keep trying (a device runs unattended for weeks)

    def delays(self) -> Iterator[float]:
        """The wait before each attempt: 0.5, 1, 2, 4, ... capped at `max_delay_s`."""
        delay, attempt = self.initial_delay_s, 0
        while self.max_attempts is None or attempt < self.max_attempts:
            yield min(delay, self.max_delay_s)
            delay, attempt = delay * 2, attempt + 1


@dataclass(frozen=True)
class PipelineOptions:
    """How the loop behaves. Change one with `dataclasses.replace`."""

    top_k: int = 3
    smooth: int = 1  # moving average over this many score vectors (1 = none)
    threshold: float = 0.0  # classes scoring below this (after smoothing) are not reported
    realtime: bool = False  # files only: pace at the file's fps and drop like a camera
    loop: bool = False  # files only: start again at the end
    max_frames: int | None = None  # stop after this many processed frames
    preprocess_in_capture: bool = True  # crop/resize/quantize in the capture thread, off the inference thread
    stats_window: int = 300  # frames behind the moving fps and latency percentiles
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    decision: DecisionPolicy | None = None  # per-class thresholds -> FrameResult.decision (a class or "unknown")
    threshold_overrides: tuple[str, ...] = ()  # --threshold values, applied again to a hot-swapped model's own thresholds

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.smooth < 1 or self.stats_window < 2:
            raise ValueError("top_k and smooth must be >= 1 and stats_window >= 2")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be within 0..1, got {self.threshold}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError("max_frames must be >= 1")


@dataclass(frozen=True)
class RunStats:
    """Totals of one run, for the final stats line."""

    frames: int  # processed by the loop
    captured: int  # read from the source
    dropped: int
    reconnects: int
    elapsed_s: float
    latency_p50_ms: float
    latency_p90_ms: float
    reason: str  # why the run ended, in words
    stop_reason: StopReason = StopReason.STOPPED  # the same, as a code

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        """One human-readable line, e.g. for stderr when the run ends."""
        return (
            f"stopped ({self.reason}): {self.frames} frames in {self.elapsed_s:.1f} s, {self.fps:.1f} fps, "
            f"latency p50 {self.latency_p50_ms:.1f} ms p90 {self.latency_p90_ms:.1f} ms, "
            f"{self.dropped} dropped, {self.reconnects} reconnects"
        )


@dataclass(frozen=True)
class _Captured:
    index: int
    timestamp: float  # time.time(), seconds
    frame_rgb: np.ndarray
    segment: int  # bumped on loop / reconnect: smoothing starts afresh
    tensor: np.ndarray | None = None  # the model input, prepared in the capture thread
    preprocess_ms: float = 0.0
    prepared_by: object | None = None  # the classifier whose preprocess made `tensor`


class FrameSlot:
    """A 1-slot buffer. `keep_all=False`: a new frame replaces an unread one (dropped).
    `keep_all=True`: `put` waits until the loop has taken the previous frame."""

    def __init__(self, keep_all: bool) -> None:
        self.keep_all = keep_all
        self.dropped = 0
        self._item: _Captured | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item: _Captured) -> bool:
        """Store `item`; False when the slot was closed (the run is ending)."""
        with self._cond:
            while self.keep_all and self._item is not None and not self._closed:
                self._cond.wait(0.1)
            if self._closed:
                return False
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify_all()
            return True

    def get(self, timeout: float) -> _Captured | None:
        """The waiting frame, or None after `timeout` seconds without one."""
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def pending(self) -> bool:
        """True while a frame waits for the loop."""
        with self._cond:
            return self._item is not None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Pipeline:
    """Runs `classifier` on frames from `source` and hands every result to `sinks`.

    >>> with open_source("clip.avi") as src:  # doctest: +SKIP
    ...     stats = Pipeline(Classifier(info), src, [JsonLinesSink()], PipelineOptions()).run()
    """

    def __init__(self, classifier: FrameClassifier, source: Source, sinks: Sequence[Sink], options: PipelineOptions | None = None) -> None:
        self.classifier = classifier
        self.decision = options.decision if options is not None else None  # replaced with the model on a hot swap
        self.source = source
        self.sinks = list(sinks)
        self.options = options or PipelineOptions()
        self.reconnects = 0
        self.captured = 0
        self._stop = threading.Event()
        self._reason = ""
        self._reason_code = StopReason.STOPPED
        self._capture_done = threading.Event()
        self._capture_error: BaseException | None = None
        self._slot = FrameSlot(keep_all=not (source.is_live or self.options.realtime))
        #: Shown as "model" in each frame's result when set (hot updates, `edge/watch.py`).
        self.model_tag: str | None = None
        self._pending: list[tuple[FrameClassifier, str | None, dict[str, Any]]] = []
        self._events: list[dict[str, Any]] = []
        self._pending_lock = threading.Lock()
        self._last_index = -1

    # -- hot update -----------------------------------------------------------------
    def swap(self, classifier: FrameClassifier, tag: str | None = None, event: dict[str, Any] | None = None) -> None:
        """Use `classifier` from the next frame on (thread-safe). `event` is delivered to
        the sinks' `on_event` at the swap, with the frame indices around it added."""
        with self._pending_lock:
            self._pending.append((classifier, tag, dict(event or {})))

    def _decision_for(self, classifier: FrameClassifier) -> tuple[DecisionPolicy, str | None]:
        """The decision policy of a hot-swapped model: its bundle's thresholds with the run's
        --threshold overrides; an override naming a class the new model lacks is dropped
        (said in the event) rather than stopping the stream."""
        labels = tuple(getattr(classifier, "labels", ()) or ())
        if not labels:  # a classifier that does not name its classes keeps the policy it had
            assert self.decision is not None
            return self.decision, None
        manifest = getattr(getattr(classifier, "info", None), "manifest", None) or {}
        try:
            return DecisionPolicy.for_model(labels, manifest, self.options.threshold_overrides), None
        except DecisionError as exc:
            return DecisionPolicy.for_model(labels, manifest), f"--threshold not applied to the new model: {exc}"

    def post_event(self, event: dict[str, Any]) -> None:
        """Deliver `event` to every sink with an `on_event(event)` method, from the loop
        thread, between two frames (thread-safe)."""
        with self._pending_lock:
            self._events.append(dict(event))

    def _between_frames(self, history: deque[np.ndarray]) -> None:
        """Apply a pending swap and deliver pending events; runs in the loop thread."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
            events, self._events = self._events, []
        for classifier, tag, event in pending:
            self.classifier, self.model_tag = classifier, tag
            if self.decision is not None:
                self.decision, note = self._decision_for(classifier)
                event = {**event, "decision": self.decision.to_dict(), **({"decision_note": note} if note else {})}
            history.clear()  # scores of another model must not be averaged in
            events.append({**event, "last_frame_before": self._last_index})
        for event in events:
            for sink in self.sinks:
                hook = getattr(sink, "on_event", None)
                if hook is None:
                    continue
                try:
                    hook(event)
                except StopPipeline as exc:
                    self.stop(str(exc) or "stopped by a sink", StopReason.SINK)
                except Exception as exc:  # an event must never stop the stream
                    log.warning("%s could not take an event: %s", type(sink).__name__, exc)

    # -- control ------------------------------------------------------------------
    def stop(self, reason: str = "stopped", code: StopReason = StopReason.STOPPED) -> None:
        """Ask the run to end after the current frame (thread- and signal-safe)."""
        if not self._stop.is_set():
            self._set_reason(reason, code)
            self._stop.set()

    def _set_reason(self, reason: str, code: StopReason) -> None:
        if not self._reason:  # the first reason wins: what ended the run, not its aftermath
            self._reason, self._reason_code = reason, code

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- capture thread -----------------------------------------------------------
    def _capture(self) -> None:
        segment, start, read_in_segment = 0, time.monotonic(), 0
        try:
            while not self._stop.is_set():
                try:
                    frame_rgb = self.source.read()
                    if frame_rgb is None and self.source.is_live:
                        raise SourceError(f"{self.source.name} returned no frame")
                except SourceError as exc:
                    if not self.source.is_live or not self._reconnect(exc):
                        self._finish(f"source failed: {exc}", StopReason.SOURCE_FAILED)
                        return
                    segment, start, read_in_segment = segment + 1, time.monotonic(), 0
                    continue
                if frame_rgb is None:
                    if not self.options.loop or read_in_segment == 0:
                        self._finish("end of input", StopReason.END_OF_INPUT)
                        return
                    self.source.close()
                    try:
                        self.source.open()
                    except SourceError as exc:  # e.g. the file was deleted while playing
                        self._finish(f"source failed: {exc}", StopReason.SOURCE_FAILED)
                        return
                    segment, start, read_in_segment = segment + 1, time.monotonic(), 0
                    continue
                read_in_segment += 1
                self._pace(start, read_in_segment)
                if not self._slot.put(self._prepare(frame_rgb, segment)):
                    return
                self.captured += 1
        except BaseException as exc:  # surfaced by run() in the main thread
            self._capture_error = exc
            self._finish("capture error", StopReason.ERROR)
        finally:
            self._capture_done.set()

    def _prepare(self, frame_rgb: np.ndarray, segment: int) -> _Captured:
        """Capture-thread side of a frame: its timestamp and, by default, the model input
        (crop + resize + quantize), so the inference thread only invokes. On a Pi the
        resize of a 640x480 frame costs about as much as a quarter of an int8 invoke."""
        captured_at = time.time()
        if not self.options.preprocess_in_capture:
            return _Captured(self.captured, captured_at, frame_rgb, segment)
        start = time.perf_counter()
        classifier = self.classifier  # read once: a hot swap may replace it meanwhile
        tensor = classifier.preprocess(frame_rgb)
        return _Captured(self.captured, captured_at, frame_rgb, segment, tensor, (time.perf_counter() - start) * 1000.0, classifier)

    def _pace(self, start: float, frames_read: int) -> None:
        """Realtime file playback: wait until this frame's time in the video."""
        fps = self.source.fps
        if self.options.realtime and not self.source.is_live and fps:
            wait = start + frames_read / fps - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)

    def _reconnect(self, error: SourceError) -> bool:
        """Reopen a lost live source with exponential backoff; False when giving up or stopping."""
        self.source.close()
        log.warning("%s lost (%s); reconnecting", self.source.name, error)
        for attempt, delay in enumerate(self.options.reconnect.delays(), start=1):
            log.warning("reconnect attempt %d to %s in %.1f s", attempt, self.source.name, delay)
            if self._stop.wait(delay):
                return False
            try:
                self.source.open()
            except SourceError as exc:
                log.warning("reconnect attempt %d failed: %s", attempt, exc)
                continue
            self.reconnects += 1
            log.warning("reconnected to %s after %d attempt(s)", self.source.name, attempt)
            return True
        log.error("giving up on %s after %d reconnect attempts", self.source.name, self.options.reconnect.max_attempts)
        return False

    def _finish(self, reason: str, code: StopReason) -> None:
        self._set_reason(reason, code)
        self._capture_done.set()

    # -- inference loop -----------------------------------------------------------
    def run(self) -> RunStats:
        """Open the source, run until the end / `stop()` / `max_frames`, close everything.

        Raises `SourceError` when the source cannot be opened at all.
        """
        self.source.open()
        thread = threading.Thread(target=self._capture, name="tledge-capture", daemon=True)
        started = time.monotonic()
        latencies: deque[float] = deque(maxlen=self.options.stats_window)
        frames = 0
        try:
            thread.start()
            frames = self._loop(latencies)
        except KeyboardInterrupt:
            self._set_reason("interrupted", StopReason.INTERRUPTED)
            raise
        except BaseException as exc:
            self._set_reason(f"error: {type(exc).__name__}", StopReason.ERROR)
            raise
        finally:
            self._stop.set()
            self._slot.close()
            thread.join(timeout=5.0)
            self._close_all(thread)
        if self._capture_error is not None:
            raise self._capture_error
        return RunStats(
            frames=frames,
            captured=self.captured,
            dropped=self._slot.dropped,
            reconnects=self.reconnects,
            elapsed_s=time.monotonic() - started,
            latency_p50_ms=percentile(latencies, 50),
            latency_p90_ms=percentile(latencies, 90),
            reason=self._reason or "stopped",
            stop_reason=self._reason_code,
        )

    def _loop(self, latencies: deque[float]) -> int:
        opts = self.options
        history: deque[np.ndarray] = deque(maxlen=opts.smooth)
        ticks: deque[float] = deque(maxlen=opts.stats_window)
        segment, frames = -1, 0
        while not self._stop.is_set():
            self._between_frames(history)
            item = self._slot.get(timeout=0.05)
            if item is None:
                if self._capture_done.is_set() and not self._slot.pending():
                    break
                continue
            if item.segment != segment:
                history.clear()
                segment = item.segment
            result = self._classify(item, history, ticks, latencies)
            self._last_index = item.index
            frames += 1
            try:
                for sink in self.sinks:
                    sink.emit(item.frame_rgb, result)
            except StopPipeline as exc:
                self.stop(str(exc) or "stopped by a sink", StopReason.SINK)
            if opts.max_frames is not None and frames >= opts.max_frames:
                self.stop(f"{frames} frames", StopReason.MAX_FRAMES)
        return frames

    def _classify(self, item: _Captured, history: deque[np.ndarray], ticks: deque[float], latencies: deque[float]) -> FrameResult:
        start = time.perf_counter()
        prepared = item.tensor is not None and item.prepared_by is self.classifier
        tensor = item.tensor if prepared else self.classifier.preprocess(item.frame_rgb)  # after a swap: the new model's input
        scores = self.classifier.invoke(tensor)
        history.append(scores)
        smoothed = scores if len(history) == 1 else np.mean(np.stack(history), axis=0)
        top = tuple(t for t in self.classifier.postprocess(smoothed, self.options.top_k) if t[2] >= self.options.threshold)
        now = time.perf_counter()
        latency_ms = (now - start) * 1000.0 + item.preprocess_ms  # preprocess + invoke + postprocess
        latencies.append(latency_ms)
        ticks.append(now)
        fps = (len(ticks) - 1) / (ticks[-1] - ticks[0]) if len(ticks) > 1 and ticks[-1] > ticks[0] else 0.0
        decision = None
        if self.decision is not None:
            best = int(np.argmax(smoothed))
            decision = self.decision.decide(best, float(smoothed[best]))
        return FrameResult(item.index, item.timestamp, top, latency_ms, fps, self._slot.dropped, self.model_tag, scores=smoothed, decision=decision)

    def _close_all(self, thread: threading.Thread) -> None:
        if thread.is_alive():  # a blocked camera read: never close a device under a reader
            log.warning("%s did not stop within 5 s; leaving it to the OS", self.source.name)
        else:
            self.source.close()
        if self._capture_error is not None:
            self._set_reason("capture error", StopReason.ERROR)
        for sink in self.sinks:
            hook = getattr(sink, "on_stop", None)
            if hook is None:
                continue
            try:
                hook(self._reason_code)
            except Exception as exc:
                log.warning("%s could not take the stop reason: %s", type(sink).__name__, exc)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # one failing sink must not hide the others' data
                log.warning("closing %s failed: %s", type(sink).__name__, exc)


@contextmanager
def stop_on_signals(pipeline: Pipeline, signums: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """While active, SIGINT / SIGTERM stop `pipeline` cleanly instead of killing the process.

    A second signal of the same kind falls back to the previous handler (e.g. Ctrl-C twice
    interrupts at once). Only the main thread can install handlers; elsewhere this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in signums}

    def handler(signum: int, frame: object) -> None:
        pipeline.stop(signal.Signals(signum).name, StopReason.INTERRUPTED)
        signal.signal(signum, previous[signum])

    for signum in signums:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
