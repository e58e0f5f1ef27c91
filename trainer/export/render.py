"""The export report (report.json) as rich tables for the terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from trainer.stats import format_json


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f}%"


def _acc(row: dict[str, Any], key: str) -> str:
    """An accuracy with its 95 % Wilson interval and n when the report has it."""
    interval = row.get(f"{key}_interval")
    return format_json(interval) if interval else _pct(row.get(key))


def _points(value: float | None) -> str:
    return "n/a" if value is None else f"{value + 0.0:+.1f}"  # + 0.0 turns -0.0 into 0.0


def render_report(report: dict[str, Any], console: Console) -> None:
    """Print the verification report as rich tables."""
    splits = Table(title=f"Verification: Keras float vs .tflite ({report['quantization']}, edge runtime)")
    for column in ("split", "images", "float acc", "tflite acc", "change (pts)", "top-1 agreement"):
        splits.add_column(column, justify="left" if column == "split" else "right")
    for name, row in report["splits"].items():
        drop = None if row["drop_points"] is None else 0.0 - row["drop_points"]
        splits.add_row(name, str(row["images"]), _acc(row, "float_accuracy"), _acc(row, "tflite_accuracy"), _points(drop), _acc(row, "top1_agreement"))
    console.print(splits)
    classes = Table(title="Per class (val + test)")
    for column in ("class", "images", "float acc", "tflite acc", "delta (pts)"):
        classes.add_column(column, justify="left" if column == "class" else "right")
    for row in report["per_class"]:
        style = "red" if (row["delta_points"] or 0) < 0 else None
        classes.add_row(row["label"], str(row["images"]), _acc(row, "float_accuracy"), _acc(row, "tflite_accuracy"), _points(row["delta_points"]), style=style)
    console.print(classes)
    latency = report["latency_ms"]
    console.print(
        f"size {report['model_size_bytes'] / 1e6:.2f} MB · mean latency {latency['mean']:.2f} ms "
        f"(invoke {latency['invoke_mean']:.2f} ms, {report['backend']}) · input {report['io']}",
        highlight=False,
    )
    verdict = "passed" if report["passed"] else ("accepted with --accept-drop" if report["accepted_drop"] else "FAILED")
    console.print(f"accuracy drop {report['drop_points']:.2f} points (limit {report['max_drop_points']:g}): {verdict}", highlight=False)
    render_thresholds(report.get("thresholds"), console)


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
