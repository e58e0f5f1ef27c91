"""Metrics and confusion matrices, and `tledge evaluate` of a run's Keras model."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.errors import ModelError
from trainer.errors import DataError
from trainer.run_dir import read_run
from trainer.stats import wilson
from trainer.stream import predict_items


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy with its 95 % Wilson interval, per-class precision/recall/F1/support,
    macro F1, confusion matrix.

    The confusion matrix is indexed [true class][predicted class].
    """
    n = len(labels)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.argmax(probs, axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    per_class: dict[str, dict[str, float | int]] = {}
    f1s = []
    for i, name in enumerate(labels):
        tp = int(cm[i, i])
        predicted, actual = int(cm[:, i].sum()), int(cm[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "support": actual}
        if actual:
            f1s.append(f1)
    correct = int(np.sum(y_pred == y_true))
    return {
        "n": int(len(y_true)),
        "accuracy": round(correct / len(y_true), 4) if len(y_true) else None,
        "accuracy_interval": wilson(correct, int(len(y_true))).to_json() if len(y_true) else None,  # 95 % Wilson
        "macro_f1": round(float(np.mean(f1s)), 4) if f1s else None,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


# -- evaluating a run ------------------------------------------------------------------


def evaluate_run(run_dir: str | os.PathLike[str], split: str = "test", data_root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Recompute the metrics of a run's `model.keras` on one of its splits. `data_root`:
    where the run's images are now, when they moved (see `trainer.run_dir.read_run`)."""
    from trainer.deps import require_keras

    run = read_run(run_dir, data_root)
    if split not in run.splits:
        raise DataError(f"split {split!r} is not in {run.path}/splits.json; choose one of {sorted(run.splits)}")
    entries = run.splits[split]
    if not entries:
        raise DataError(f"the {split} split of {run.path} has no images; choose another with --split")
    keras = require_keras()
    try:
        model = keras.saving.load_model(run.model_path, compile=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load {run.model_path} ({exc}); re-run tledge train") from None
    y_true, probs, unreadable = predict_items(model, entries, run.image_size, run.resize)
    metrics = classification_metrics(y_true, probs, run.labels)
    metrics["split"] = split
    metrics["unreadable"] = unreadable
    return metrics
