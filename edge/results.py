"""The result of one frame, as sinks (window, JSON lines, CSV, live view) receive it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FrameResult:
    """What the pipeline knows about one processed frame.

    `top` holds the smoothed top-k classes whose score reaches the pipeline's threshold,
    best first; it is empty when no class does (then `label` and `score` are None).
    """

    index: int  # frame number from the source (0-based)
    timestamp: float  # time.time() at capture, seconds
    top: tuple[tuple[int, str, float], ...]  # smoothed top-k: (class index, label, score)
    latency_ms: float  # preprocess + invoke + postprocess of this frame
    fps: float  # loop frames per second (moving)
    dropped: int  # frames dropped so far (freshest-frame policy)
    model: str | None = None  # which model answered (set by hot updates: `run --watch`)
    #: Every class's (smoothed) score, before the threshold and top-k cut; for sinks that
    #: judge the decision itself (e.g. `--save-uncertain`). Not part of `to_dict`.
    scores: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: The decided label (edge/decision.py): the top-1 class, or "unknown" below its
    #: threshold. None when the pipeline runs without a decision policy.
    decision: str | None = None

    @property
    def label(self) -> str | None:
        """The decision when there is one, else the best label (None when no class reaches the threshold)."""
        if self.decision is not None:
            return self.decision
        return self.top[0][1] if self.top else None

    @property
    def score(self) -> float | None:
        """The best (smoothed) score, or None when no class reaches the threshold."""
        return self.top[0][2] if self.top else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: index, timestamp, label, score, top, latency_ms, fps, dropped
        (and model, when set)."""
        record = {
            "index": self.index,
            "timestamp": round(self.timestamp, 6),
            "label": self.label,
            "score": None if self.score is None else round(self.score, 6),
            "top": [{"index": i, "label": label, "score": round(score, 6)} for i, label, score in self.top],
            "latency_ms": round(self.latency_ms, 3),
            "fps": round(self.fps, 3),
            "dropped": self.dropped,
        }
        if self.model is not None:
            record["model"] = self.model
        return record
