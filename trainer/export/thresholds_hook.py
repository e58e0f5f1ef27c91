"""Glue between the exporter's verification and trainer/export/thresholds.py.

Kept apart from export.py so the exporter only gains one call: the verified .tflite's
scores on val and test go in; the report's "thresholds" section and the bundle's
"thresholds" entry come out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from trainer.export.thresholds import SplitScores, ThresholdOptions, bundle_entry, select


def thresholds_section(
    report: dict[str, Any],
    predictions: Mapping[str, Any],
    labels: Sequence[str],
    target_precision: float | None,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(report with a "thresholds" section, {"thresholds": entry} for the bundle or {}).

    `predictions` maps split name -> verify.SplitPredictions (its `scores` and `truth`).
    """
    if target_precision is None:
        return {**report, "thresholds": None}, {}
    splits = {name: SplitScores(p.scores, p.truth) for name, p in predictions.items() if p.truth.size}
    selected = select(splits, labels, ThresholdOptions(target_precision=target_precision))
    log(f"thresholds for {target_precision:.0%} precision: {selected['method_detail']}")
    return {**report, "thresholds": selected}, {"thresholds": bundle_entry(selected)}
