"""From scores to a decision: the top-1 class when it reaches its threshold, else `unknown`.

Thresholds come from the bundle (chosen at export for a target precision, see
trainer/export/thresholds.py; manifest "thresholds" -> "classes": {label: value or null}) and
can be overridden on the command line:

    --threshold 0.8          every class
    --threshold bees=0.9     one class (repeatable; later wins)

A null threshold means the class is never decided (no cut reached the target
precision). A model without thresholds decides its top-1 class on every frame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge.errors import DecisionError, ModelError

UNKNOWN_LABEL = "unknown"

__all__ = ["DecisionPolicy", "UNKNOWN_LABEL", "parse_overrides"]


@dataclass(frozen=True)
class DecisionPolicy:
    """Per-class thresholds (index-aligned with `labels`; `inf` = never decided)."""

    labels: tuple[str, ...]
    thresholds: tuple[float, ...]
    source: str = "none"  # "bundle", "bundle+override", "override" or "none"

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.thresholds):
            raise DecisionError(f"{len(self.thresholds)} thresholds for {len(self.labels)} labels")

    @classmethod
    def top1(cls, labels: Sequence[str]) -> "DecisionPolicy":
        """No thresholds: the top-1 class is always the decision."""
        return cls(tuple(labels), tuple(0.0 for _ in labels), "none")

    @classmethod
    def for_model(cls, labels: Sequence[str], manifest: Mapping[str, Any], overrides: Sequence[str] = ()) -> "DecisionPolicy":
        """The bundle's thresholds (if any) with the command line's `overrides` applied."""
        base = _from_manifest(labels, manifest)
        policy = base if base is not None else cls.top1(labels)
        if not overrides:
            return policy
        values = list(policy.thresholds)
        for label, value in parse_overrides(overrides, labels):
            for i, name in enumerate(labels):
                if label is None or name == label:
                    values[i] = value
        return cls(tuple(labels), tuple(values), "bundle+override" if base is not None else "override")

    def decide(self, index: int, score: float) -> str:
        """The decided label for a top-1 class `index` with `score`."""
        return self.labels[index] if score >= self.thresholds[index] else UNKNOWN_LABEL

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {label: threshold or None (never)} and where they came from."""
        return {"source": self.source, "classes": {l: (None if math.isinf(t) else t) for l, t in zip(self.labels, self.thresholds)}}


def parse_overrides(overrides: Sequence[str], labels: Sequence[str]) -> list[tuple[str | None, float]]:
    """`["0.8", "bees=0.9"]` -> `[(None, 0.8), ("bees", 0.9)]`; bad ones raise DecisionError."""
    parsed: list[tuple[str | None, float]] = []
    for text in overrides:
        label, sep, value = text.rpartition("=")
        name = label.strip() if sep else None
        if sep and not name:
            raise DecisionError(f"--threshold {text!r}: write LABEL=VALUE, e.g. {labels[0]}=0.9, or one VALUE for every class")
        if name is not None and name not in labels:
            raise DecisionError(f"--threshold {text!r}: no class {name!r}; the model's classes are {', '.join(labels)}")
        try:
            number = float(value)
        except ValueError:
            raise DecisionError(f"--threshold {text!r}: {value!r} is not a number; use a score within 0..1") from None
        if not 0.0 <= number <= 1.0:
            raise DecisionError(f"--threshold {text!r}: scores are within 0..1")
        parsed.append((name, number))
    return parsed


def _from_manifest(labels: Sequence[str], manifest: Mapping[str, Any]) -> DecisionPolicy | None:
    section = manifest.get("thresholds")
    if section is None:
        return None
    classes = section.get("classes") if isinstance(section, dict) else None
    if not isinstance(classes, dict) or set(classes) != set(labels):
        raise ModelError("the bundle's \"thresholds\" do not name exactly its classes; re-export it (or --thresholds none at export)")
    values = []
    for label in labels:
        value = classes[label]
        if value is None:
            values.append(math.inf)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
            values.append(float(value))
        else:
            raise ModelError(f"the bundle's threshold for {label!r} is {value!r}, not a score within 0..1 or null; re-export it")
    return DecisionPolicy(tuple(labels), tuple(values), "bundle")
