"""Accuracy with its uncertainty: Wilson score intervals and how tledge writes them.

An accuracy measured on n images is an estimate of a proportion. tledge never reports
one without its sample size and a 95 % Wilson score interval, e.g.
`97.4 % (93.5-99.0 %, n=153)`. Wilson's interval is used rather than the normal
approximation (`p ± z·sqrt(p(1-p)/n)`) because it stays inside [0, 1] and keeps its
coverage near 0 % and 100 % and for small n, which is exactly where tledge's small
validation and test splits live.

Pure Python and numpy-free, so every part of tledge (and the benchmark scripts) can use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Two-sided 95 % normal quantile, Φ⁻¹(0.975).
Z95 = 1.959963984540054
#: Below this many images per class in val or test, an accuracy is called a weak estimate.
MIN_PER_CLASS = 20


@dataclass(frozen=True)
class Interval:
    """A proportion `correct / n` with its Wilson interval [low, high] (fractions)."""

    correct: int
    n: int
    low: float
    high: float
    confidence: float = 0.95

    @property
    def value(self) -> float | None:
        return self.correct / self.n if self.n else None

    def to_json(self) -> dict[str, Any]:
        """JSON fields: value, low, high (fractions, 4 decimals), n, correct, confidence, method."""
        value = self.value
        return {
            "value": None if value is None else round(value, 4),
            "low": round(self.low, 4),
            "high": round(self.high, 4),
            "n": self.n,
            "correct": self.correct,
            "confidence": self.confidence,
            "method": "wilson",
        }

    def format(self) -> str:
        """`97.4 % (93.5-99.0 %, n=153)`; `n/a (n=0)` when nothing was measured."""
        return format_interval(self.value, self.low, self.high, self.n)


def wilson(correct: int, n: int, z: float = Z95) -> Interval:
    """The Wilson score interval of `correct` successes in `n` trials (default 95 %).

    centre = (p + z²/2n) / (1 + z²/n),  half = z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n).
    With n = 0 the interval is the whole [0, 1] (nothing is known).
    """
    if n < 0 or correct < 0 or correct > n:
        raise ValueError(f"need 0 <= correct <= n, got correct={correct}, n={n}")
    if n == 0:
        return Interval(0, 0, 0.0, 1.0)
    p = correct / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    # Clamp round-off only: at p = 0 or 1 the exact bound is 0 or 1.
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return Interval(correct, n, low, high)


def accuracy_interval(accuracy: float | None, n: int) -> Interval | None:
    """The interval of an accuracy already rounded to a fraction of `n` images."""
    if accuracy is None or n <= 0:
        return None
    return wilson(int(round(accuracy * n)), n)


def format_interval(value: float | None, low: float, high: float, n: int) -> str:
    """`97.4 % (93.5-99.0 %, n=153)` from fractions; `n/a (n=0)` when value is None."""
    if value is None or n <= 0:
        return f"n/a (n={n})"
    return f"{100 * value:.1f} % ({100 * low:.1f}-{100 * high:.1f} %, n={n})"


def format_accuracy(accuracy: float | None, n: int | None) -> str:
    """An accuracy (fraction) measured on `n` images, with its 95 % Wilson interval."""
    interval = accuracy_interval(accuracy, int(n or 0))
    return interval.format() if interval else f"n/a (n={int(n or 0)})"


def format_json(entry: dict[str, Any] | None) -> str:
    """Format an `Interval.to_json()` dict (as stored in metrics.json)."""
    if not entry:
        return "n/a"
    return format_interval(entry.get("value"), entry["low"], entry["high"], entry["n"])


def weak_splits(counts: dict[str, dict[str, int]], splits: tuple[str, ...] = ("val", "test"), minimum: int = MIN_PER_CLASS) -> dict[str, int]:
    """Splits whose smallest class holds fewer than `minimum` images: {split: smallest count}.

    Empty splits are not listed (they have no estimate to call weak).
    """
    weak = {}
    for split in splits:
        per_class = counts.get(split) or {}
        if per_class and sum(per_class.values()) and min(per_class.values()) < minimum:
            weak[split] = min(per_class.values())
    return weak
