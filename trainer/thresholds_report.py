"""The export report's thresholds table, and the `--thresholds` choice."""

from __future__ import annotations

from enum import Enum
from typing import Any

from rich.console import Console
from rich.table import Table


class ThresholdMode(str, Enum):
    """`tledge export --thresholds`: choose per-class thresholds (auto) or store none."""

    AUTO = "auto"
    NONE = "none"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f}%"


def render_thresholds(section: dict[str, Any] | None, console: Console) -> None:
    """Per class: threshold, then precision / recall on each split; coverage per split."""
    if not section:
        console.print("decision thresholds: none (devices decide the top-1 class)", highlight=False)
        return
    splits = list(section["splits"])
    table = Table(title=f"Decision thresholds for {section['target_precision']:.0%} precision ({section['method_detail']})")
    table.add_column("class")
    table.add_column("threshold", justify="right")
    for name in splits:
        table.add_column(f"{name} precision", justify="right")
        table.add_column(f"{name} recall", justify="right")
    for label, threshold in section["classes"].items():
        cells = ["never" if threshold is None else f"{threshold:.3f}"]
        for name in splits:
            row = section["splits"][name]["per_class"][label]
            cells += [_pct(row["precision"]), _pct(row["recall"])]
        table.add_row(label, *cells, style="red" if threshold is None else None)
    console.print(table)
    coverage = " · ".join(
        f"{name}: coverage {_pct(s['coverage'])}, accuracy when decided {_pct(s['decided_accuracy'])}" for name, s in section["splits"].items()
    )
    console.print(f"below a class's threshold the decision is 'unknown' — {coverage}", highlight=False)
