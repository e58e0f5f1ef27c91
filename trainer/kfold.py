"""A stratified k-fold accuracy estimate of the head, for data without per-class validation."""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.config import TrainOptions
from trainer.features.training import FeatureRows
from trainer.head import fit_dense
from trainer.stats import wilson


def kfold_estimate(options: TrainOptions, train_rows: FeatureRows, num_classes: int, epochs: int, folds: int) -> dict[str, Any]:
    """Stratified k-fold accuracy of the head (views of one image never straddle folds)."""
    images = np.unique(train_rows.groups)
    labels = np.array([train_rows.y[train_rows.groups == g][0] for g in images])
    rng = np.random.default_rng(options.seed)
    fold_of = np.empty(len(images), dtype=np.int64)
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold_of[members] = np.arange(len(members)) % folds
    correct = 0
    total = 0
    for k in range(folds):
        held = images[fold_of == k]
        test_rows = np.isin(train_rows.groups, held) & train_rows.clean
        fit_rows = ~np.isin(train_rows.groups, held)
        head, _ = fit_dense(train_rows.x[fit_rows], train_rows.y[fit_rows], num_classes, options, options.seed + k, epochs)
        pred = np.argmax(head.predict(train_rows.x[test_rows]), axis=1)
        correct += int(np.sum(pred == train_rows.y[test_rows]))
        total += int(test_rows.sum())
    return {
        "method": f"stratified {folds}-fold cross-validation of the head (out-of-fold predictions)",
        "folds": folds,
        "images": total,
        "accuracy": round(correct / total, 4) if total else None,
        "interval": wilson(correct, total).to_json() if total else None,  # 95 % Wilson over the out-of-fold images
    }
