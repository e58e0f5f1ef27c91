"""`run --save-uncertain DIR`: keep the frames the model is unsure about, for labelling.

A frame is uncertain (`is_uncertain`) when its top-1 score is below the threshold in
force, when the top-1/top-2 margin is small, or when the top-1 class differs from the
previous frame's (a flip). Such frames are saved into DIR in the inbox format
(`edge/inbox.py`: JPEG, then a JSON sidecar) at most `save_per_minute` times a minute,
while DIR holds less than `max_mb`.

The sink's `emit` runs on the inference loop and only decides, rate-limits and copies
the frame into a small queue; a worker thread encodes and writes. A full disk or an
unwritable DIR is reported once on stderr (the "tledge.edge" logger) and never stops
or slows inference: frames that cannot be saved are counted and dropped.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from edge import inbox
from edge.decision import UNKNOWN_LABEL
from edge.errors import TledgeError
from edge.results import FrameResult

log = logging.getLogger("tledge.edge")

SIDECAR_TOP = 5  # classes listed by name in a sidecar (all scores are kept too)


class Reason(str, Enum):
    """Why a frame counts as uncertain (several may hold)."""

    BELOW_THRESHOLD = "below_threshold"  # top-1 under the threshold in force: the decision is "unknown"
    SMALL_MARGIN = "small_margin"  # top-1 and top-2 nearly tied
    FLIP = "label_flip"  # top-1 class differs from the previous frame's


def is_uncertain(top1: float, top2: float | None, threshold: float, margin: float, flipped: bool) -> tuple[Reason, ...]:
    """The reasons the decision on one frame is uncertain; empty when it is confident.

    `top1`/`top2` are the two best (smoothed) scores, `top2` None for a one-class model;
    `threshold` is the score the decision needs (the top-1 class's threshold in the run's
    decision policy, edge/decision.py); `margin` the smallest top-1/top-2 gap that counts as
    sure; `flipped` whether the top-1 class changed since the previous frame.
    """
    reasons = []
    if top1 < threshold:
        reasons.append(Reason.BELOW_THRESHOLD)
    if top2 is not None and top1 - top2 < margin:
        reasons.append(Reason.SMALL_MARGIN)
    if flipped:
        reasons.append(Reason.FLIP)
    return tuple(reasons)


@dataclass(frozen=True)
class UncertainOptions:
    """Where and how much `--save-uncertain` saves."""

    folder: Path
    threshold: float = 0.0  # frames without a decision (no policy): top-1 below this is uncertain
    margin: float = 0.15  # top-1 minus top-2 below this is uncertain (0 disables)
    save_per_minute: float = 6.0  # frames saved at most, evenly spaced
    max_mb: float = 200.0  # MiB; DIR is not filled beyond this
    jpeg_quality: int = 90
    flips: bool = True  # a change of the top-1 class counts as uncertain
    queue_size: int = 4  # frames waiting for the writer; more are dropped, never waited for

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0 or not 0.0 <= self.margin <= 1.0:
            raise TledgeError("--threshold and --uncertain-margin must be within 0..1")
        if not self.save_per_minute > 0 or not math.isfinite(self.save_per_minute):
            raise TledgeError("--save-rate must be a positive number of frames per minute")
        if not self.max_mb > 0 or not math.isfinite(self.max_mb):
            raise TledgeError("--save-max-mb must be a positive number of MiB")
        if not 50 <= self.jpeg_quality <= 100 or self.queue_size < 1:
            raise TledgeError("jpeg_quality must be within 50..100 and queue_size >= 1")

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1024 * 1024)


@dataclass
class SaveStats:
    """What the sink did; `uncertain` counts every uncertain frame, saved or not."""

    uncertain: int = 0
    saved: int = 0
    rate_limited: int = 0
    busy: int = 0  # the writer was behind: dropped without waiting
    over_cap: int = 0
    failed: int = 0  # the disk refused (full, read-only, permissions)

    def line(self, folder: Path) -> str:
        return (
            f"saved {self.saved} uncertain frame(s) to {folder} ({self.uncertain} uncertain; not saved: "
            f"{self.rate_limited} by --save-rate, {self.over_cap} over --save-max-mb, {self.failed} write errors, {self.busy} writer busy)"
        )


class UncertainSink:
    """A pipeline sink that saves uncertain frames into an inbox folder (see the module doc)."""

    def __init__(self, options: UncertainOptions, labels: tuple[str, ...], model_name: str, model_sha256: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.labels = labels
        self.stats = SaveStats()
        self._model = {"name": model_name, "sha256": model_sha256}
        self._clock = clock
        self._next_save = -math.inf  # clock time of the next allowed save, s
        self._previous: int | None = None  # top-1 class index of the previous frame
        self._queue: queue.Queue[tuple[np.ndarray, str, dict[str, Any]] | None] = queue.Queue(options.queue_size)
        self._reported: set[str] = set()  # problems already said on stderr
        self._failing = False
        self._used = 0
        if self._ensure_folder():
            self._used = inbox.folder_bytes(options.folder)
        self._thread = threading.Thread(target=self._writer, name="tledge-save-uncertain", daemon=True)
        self._thread.start()

    def set_model(self, name: str, sha256: str) -> None:
        """Record another model in later sidecars (a hot update swapped it in)."""
        self._model = {"name": name, "sha256": sha256}

    def on_event(self, event: dict[str, Any]) -> None:
        """A pipeline event: after a hot update (`run --watch`, event "model_update" with
        status "swapped"), later sidecars name the new model and its sha256 (read from the
        new bundle's manifest, which the update has verified; else the event's short form)."""
        if event.get("event") != "model_update" or event.get("status") != "swapped":
            return
        name, _, short = str(event.get("model", "")).partition("@")
        self.set_model(name or self._model["name"], _manifest_sha256(event.get("bundle")) or short)

    # -- the inference loop's side ------------------------------------------------------
    def emit(self, frame_rgb: np.ndarray, result: FrameResult) -> None:
        """Decide, rate-limit and hand the frame to the writer; never blocks."""
        ranked = self._ranked(result)
        if not ranked:
            return
        best = ranked[0]
        flipped = self.options.flips and self._previous is not None and best[0] != self._previous
        previous, self._previous = self._previous, best[0]
        reasons = is_uncertain(best[2], ranked[1][2] if len(ranked) > 1 else None, self._threshold(result, best[2]), self.options.margin, flipped)
        if not reasons:
            return
        self.stats.uncertain += 1
        now = self._clock()
        if now < self._next_save:
            self.stats.rate_limited += 1
            return
        self._next_save = now + 60.0 / self.options.save_per_minute
        sidecar = self._sidecar(result, ranked, reasons, previous if flipped else None)
        try:
            self._queue.put_nowait((np.array(frame_rgb, copy=True), inbox.new_frame_name(result.index, result.timestamp), sidecar))
        except queue.Full:
            self.stats.busy += 1

    def _threshold(self, result: FrameResult, top1: float) -> float:
        """The score the frame's top-1 class needed. With a decision policy (edge/decision.py,
        which follows hot updates) the frame's own decision says it: `unknown` means the
        class's threshold was not reached (inf: above any score), anything else that it was."""
        if result.decision is None:
            return self.options.threshold
        return math.inf if result.decision == UNKNOWN_LABEL else 0.0

    def _ranked(self, result: FrameResult) -> list[tuple[int, str, float]]:
        """Every class, best first (from the full scores; the reported top-k as a fallback)."""
        scores = result.scores
        if scores is None:
            return list(result.top)
        order = np.argsort(-scores, kind="stable")
        return [(int(i), self._label(int(i)), float(scores[i])) for i in order]

    def _label(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else f"class_{index}"

    def _sidecar(self, result: FrameResult, ranked: list[tuple[int, str, float]], reasons: tuple[Reason, ...],
                 previous: int | None) -> dict[str, Any]:
        record: dict[str, Any] = {
            "index": result.index,
            "timestamp": round(result.timestamp, 6),  # time.time() at capture, s
            "time": datetime.fromtimestamp(result.timestamp, timezone.utc).isoformat(timespec="milliseconds"),
            "reasons": [r.value for r in reasons],
            "decision": result.decision if result.decision is not None else result.label,  # what the run decided ("unknown" below the threshold)
            "top": [{"index": i, "label": label, "score": round(score, 6)} for i, label, score in ranked[:SIDECAR_TOP]],
            "criteria": {"threshold": "decision policy" if result.decision is not None else self.options.threshold, "margin": self.options.margin},
            "model": dict(self._model),
        }
        if previous is not None:
            record["previous_label"] = self._label(previous)
        if result.scores is not None:
            record["scores"] = [round(float(s), 6) for s in result.scores]  # index-aligned with the model's labels
        return record

    # -- the writer thread ----------------------------------------------------------------
    def _writer(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._save(*item)
            except Exception as exc:  # noqa: BLE001 - whatever happens, inference goes on
                self._failed("error", f"cannot save an uncertain frame ({type(exc).__name__}: {exc}); inference goes on")

    def _save(self, frame_rgb: np.ndarray, name: str, sidecar: dict[str, Any]) -> None:
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.options.jpeg_quality])
        if not ok:
            raise TledgeError(f"OpenCV could not encode a {frame_rgb.shape} frame as JPEG")
        jpeg = encoded.tobytes()
        folder, cap = self.options.folder, self.options.max_bytes
        if self._used + len(jpeg) + 4096 > cap:
            self._used = inbox.folder_bytes(folder)  # labelling may have emptied it meanwhile
            if self._used + len(jpeg) + 4096 > cap:
                self.stats.over_cap += 1
                self._report("cap", f"{folder} holds {self._used / 2**20:.1f} MiB, the --save-max-mb limit: no more uncertain "
                                    f"frames are saved until some are labelled (tledge label {folder} --to DATA) or deleted")
                return
        if not self._ensure_folder():
            self.stats.failed += 1
            return
        try:
            self._used += inbox.write_frame(folder, name, jpeg, sidecar)
        except OSError as exc:
            self._failed("write", _describe(exc, folder))
            return
        self.stats.saved += 1
        self._reported.discard("cap")
        if self._failing:
            self._failing = False
            self._reported.discard("write")
            log.warning("save-uncertain: saving to %s again", folder)

    def _ensure_folder(self) -> bool:
        try:
            self.options.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._failed("write", _describe(exc, self.options.folder), count=False)
            return False
        return True

    def _failed(self, kind: str, message: str, count: bool = True) -> None:
        if count:
            self.stats.failed += 1
        self._failing = True
        self._report(kind, message)

    def _report(self, kind: str, message: str) -> None:
        """Say a problem once (until it clears), never raise."""
        if kind not in self._reported:
            self._reported.add(kind)
            log.warning("save-uncertain: %s", message)

    def close(self) -> None:
        """Finish the frames already queued (a few), stop the writer, say what was saved."""
        try:
            self._queue.put(None, timeout=5.0)
        except queue.Full:
            pass
        self._thread.join(timeout=10.0)
        if self.stats.uncertain:
            log.info("save-uncertain: %s", self.stats.line(self.options.folder))


def _manifest_sha256(bundle: Any) -> str | None:
    """The model sha256 in `bundle`/manifest.json, or None when it cannot be read."""
    if not bundle:
        return None
    try:
        manifest = json.loads((Path(bundle) / "manifest.json").read_text(encoding="utf-8"))
        value = manifest["model"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


def _describe(exc: OSError, folder: Path) -> str:
    """One actionable line for an OSError while saving into `folder`."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk holding {folder} is full: uncertain frames are not saved (inference goes on); free some space"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{folder} is not writable ({exc.strerror}): uncertain frames are not saved (inference goes on); choose another --save-uncertain folder"
    return f"cannot write into {folder} ({exc.strerror or exc}): uncertain frames are not saved (inference goes on)"
