"""The run folder's pictures: learning curves and confusion matrices (matplotlib, Agg).

`draw` makes all of a run's pictures from plain data; `python -m trainer.plots` does the
same in a process of its own, from that data as JSON on stdin (`tledge train` draws there
while it saves model.keras: matplotlib's import and drawing then take no time from the
save, which a thread of the same process slowed by holding the GIL).
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomic import write_bytes


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    write_bytes(path, buffer.getvalue())


def plot_history(rows: list[dict[str, Any]], path: Path) -> None:
    """Learning curves: loss and accuracy per epoch, train and validation."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    steps = list(range(1, len(rows) + 1))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [r.get(prefix + metric) for r in rows]
            if any(v is not None for v in values):
                ax.plot(steps, [np.nan if v is None else v for v in values], style, label=(prefix or "train_") + metric)
        ax.set_xlabel("epoch (head, then fine-tuning)")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    _save(fig, path)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], labels: Sequence[str], path: Path, title: str) -> None:
    """A confusion-matrix heat map with counts (rows: true class, columns: predicted)."""
    plt = _pyplot()
    cm = np.asarray(matrix)
    side = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = cm.max() / 2 if cm.size else 0
    for (i, j), value in np.ndenumerate(cm):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > threshold else "black", fontsize=8)
    _save(fig, path)
    plt.close(fig)


def draw(folder: Path, history: list[dict[str, Any]], confusions: Sequence[tuple[list[list[int]], Sequence[str], str, str]]) -> None:
    """learning_curves.png from `history`, and one picture per (matrix, labels, file name,
    title) of `confusions`, in `folder`."""
    plot_history(history, folder / "learning_curves.png")
    for matrix, labels, name, title in confusions:
        plot_confusion(matrix, labels, folder / name, title)


def main() -> int:
    """`draw` of the JSON object on stdin: {"folder", "history", "confusions"}. matplotlib
    is imported first: a caller may start this process before its data is ready."""
    _pyplot()
    given = json.load(sys.stdin)
    draw(Path(given["folder"]), given["history"], [tuple(c) for c in given["confusions"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
