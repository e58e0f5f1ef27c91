"""How a run's accuracy is measured given its data: on val, by k-fold, or not at all."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from trainer.dataset import Dataset


class EvalMode(str, Enum):
    """Where the validation accuracy comes from."""

    VAL = "val"  # every class has validation images
    KFOLD = "kfold"  # a k-fold estimate over train + val (val joins train)
    UNAVAILABLE = "unavailable"  # a class has a single image: no estimate possible


@dataclass(frozen=True)
class EvalPlan:
    """How accuracy is measured given the data: on val, by k-fold, or not at all."""

    mode: EvalMode
    reason: str | None = None
    folds: int = 0


def plan_evaluation(dataset: Dataset) -> EvalPlan:
    """Validate on val when every class has val images; otherwise the honest fallback.

    Fallbacks: a stratified k-fold estimate over all non-test images when each class has
    at least 2 of them, else no accuracy estimate at all (marked unavailable).
    """
    counts = dataset.counts()
    missing = [name for name in dataset.labels if counts["val"].get(name, 0) == 0]
    if not missing:
        return EvalPlan(EvalMode.VAL)
    pooled = [counts["train"][n] + counts["val"][n] for n in dataset.labels]
    base = (
        f"class(es) {missing} have no validation images (too few images to split); "
        "training on all train+val images"
    )
    if min(pooled) >= 2:
        folds = min(5, min(pooled))
        return EvalPlan(EvalMode.KFOLD, f"{base}; validation accuracy is a {folds}-fold cross-validation estimate", folds)
    return EvalPlan(EvalMode.UNAVAILABLE, f"{base}; a class has a single image, so no accuracy estimate is possible: add images")


def merge_val_into_train(dataset: Dataset) -> Dataset:
    """A copy whose val images have joined train (val left empty)."""
    splits = dict(dataset.splits)
    splits["train"] = tuple(splits["train"]) + tuple(splits.get("val", ()))
    splits["val"] = ()
    return replace(dataset, splits=splits)
