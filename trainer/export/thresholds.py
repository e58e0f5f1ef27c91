"""Per-class decision thresholds, chosen on the exported file's own held-out scores.

A device decides "class c" for a frame when c is the top-1 class and its score reaches
c's threshold; below it the decision is `unknown` (see edge/decision.py). Each class
gets the *lowest* threshold at which its decisions on the selection split reach the
target precision, which is the threshold that keeps the most recall:

    scores of the frames whose top-1 is c, best first -> cumulative precision
    -> the deepest cut whose precision >= target -> that cut's score is c's threshold

No cut reaching the target gives `None` (the class is never decided, stored as JSON
null). A class the split never predicts gets the threshold chosen on all classes pooled.

Selection split: val when it is big enough (`min_val_images`, and every class present);
otherwise val and test are pooled and thresholds are cross-fitted with k stratified
folds: every image is judged by thresholds chosen without it (out-of-fold), so the
reported precision is not the optimistic in-sample figure; the stored thresholds are
then chosen on the whole pool. Pure numpy: no TensorFlow here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

UNKNOWN = -1  # decision index of "unknown"
DEFAULT_TARGET_PRECISION = 0.95
DEFAULT_MIN_VAL_IMAGES = 50  # fewer val images than this: k-fold over val + test
DEFAULT_FOLDS = 5


class ThresholdMethod(str, Enum):
    """How the thresholds were selected (recorded in the bundle and the report)."""

    VAL = "val"  # chosen on val; val figures in-sample, test figures held out
    KFOLD = "kfold"  # val + test pooled, k-fold out-of-fold figures


@dataclass(frozen=True)
class ThresholdOptions:
    """`target_precision` in 0..1 (exclusive of 0); `folds` for the tiny-split fallback."""

    target_precision: float = DEFAULT_TARGET_PRECISION
    min_val_images: int = DEFAULT_MIN_VAL_IMAGES
    folds: int = DEFAULT_FOLDS
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.target_precision <= 1.0:
            raise ValueError(f"target precision must be within (0, 1], got {self.target_precision}")
        if self.folds < 2:
            raise ValueError("folds must be >= 2")


@dataclass(frozen=True)
class SplitScores:
    """The exported model's scores on one split."""

    scores: np.ndarray  # (n, classes) float probabilities, dequantized
    truth: np.ndarray  # (n,) int class indices


def pick_threshold(top_scores: np.ndarray, correct: np.ndarray, target: float) -> float | None:
    """The lowest score threshold whose decisions (score >= t) reach `target` precision.

    `top_scores`: the top-1 score of every image predicted as the class; `correct`:
    whether each of those predictions is right. None when no threshold reaches it.
    """
    if top_scores.size == 0:
        return None
    order = np.argsort(-top_scores, kind="stable")
    ranked, hits = top_scores[order], correct[order].astype(np.float64)
    precision = np.cumsum(hits) / np.arange(1, ranked.size + 1)
    # A cut is only real where the next score is lower: tied scores are all in or all out.
    boundary = np.append(ranked[:-1] > ranked[1:], True)
    good = np.flatnonzero((precision >= target - 1e-12) & boundary)
    return None if good.size == 0 else float(ranked[good[-1]])


def choose(scores: np.ndarray, truth: np.ndarray, num_classes: int, target: float) -> list[float | None]:
    """One threshold per class (see the module docstring), chosen on (scores, truth)."""
    top = scores.argmax(axis=1) if scores.size else np.zeros(0, dtype=np.int64)
    top_score = scores.max(axis=1) if scores.size else np.zeros(0)
    correct = top == truth
    pooled = pick_threshold(top_score, correct, target)
    out: list[float | None] = []
    for c in range(num_classes):
        mask = top == c
        out.append(pick_threshold(top_score[mask], correct[mask], target) if mask.any() else pooled)
    return out


def decide(scores: np.ndarray, thresholds: Sequence[float | None]) -> np.ndarray:
    """Decision per row: the top-1 class when its score reaches its threshold, else UNKNOWN."""
    if scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    top = scores.argmax(axis=1)
    limit = np.array([np.inf if t is None else t for t in thresholds], dtype=np.float64)
    return np.where(scores.max(axis=1) >= limit[top], top, UNKNOWN)


def metrics(decisions: np.ndarray, truth: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Coverage and selective accuracy overall; precision/recall/decided per class.

    precision = right decisions of c / decisions of c (None when c was never decided);
    recall = right decisions of c / images of c; coverage = decided images / images.
    """
    n = int(truth.size)
    decided = decisions != UNKNOWN
    per_class = {}
    for c, label in enumerate(labels):
        said, actual = decisions == c, truth == c
        right = int(np.sum(said & actual))
        per_class[label] = {
            "images": int(actual.sum()),
            "decided": int(said.sum()),
            "precision": _ratio(right, int(said.sum())),
            "recall": _ratio(right, int(actual.sum())),
        }
    return {
        "images": n,
        "coverage": _ratio(int(decided.sum()), n),
        "decided_accuracy": _ratio(int(np.sum(decisions[decided] == truth[decided])), int(decided.sum())),
        "per_class": per_class,
    }


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 6) if b else None


def stratified_folds(truth: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number per image: each class dealt round-robin over the folds after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(truth.size, dtype=np.int64)
    offset = 0
    for c in np.unique(truth):
        members = np.flatnonzero(truth == c)
        rng.shuffle(members)
        fold[members] = (np.arange(members.size) + offset) % folds
        offset += members.size  # so small classes do not all start in fold 0
    return fold


def out_of_fold(scores: np.ndarray, truth: np.ndarray, num_classes: int, target: float, folds: int, seed: int) -> np.ndarray:
    """Decisions where each image is judged by thresholds chosen on the other folds."""
    fold = stratified_folds(truth, folds, seed)
    decisions = np.full(truth.size, UNKNOWN, dtype=np.int64)
    for f in range(folds):
        held = fold == f
        if held.any():
            chosen = choose(scores[~held], truth[~held], num_classes, target)
            decisions[held] = decide(scores[held], chosen)
    return decisions


def _use_kfold(splits: Mapping[str, SplitScores], num_classes: int, options: ThresholdOptions) -> bool:
    val = splits.get("val")
    if val is None or val.truth.size < options.min_val_images:
        return True
    return bool(np.unique(val.truth).size < num_classes)


def select(splits: Mapping[str, SplitScores], labels: Sequence[str], options: ThresholdOptions = ThresholdOptions()) -> dict[str, Any]:
    """Choose the thresholds and measure them on val and test.

    Returns the export report's "thresholds" section; `bundle_entry(result)` is the part
    stored in the bundle. Raises ValueError when there is no image at all.
    """
    present = {name: s for name, s in splits.items() if s.truth.size}
    if not present:
        raise ValueError("no val or test images to choose thresholds on")
    k, target = len(labels), options.target_precision
    if _use_kfold(present, k, options):
        names = list(present)
        pool = SplitScores(np.concatenate([present[n].scores for n in names]), np.concatenate([present[n].truth for n in names]))
        folds = max(2, min(options.folds, int(pool.truth.size)))
        thresholds = choose(pool.scores, pool.truth, k, target)
        oof = out_of_fold(pool.scores, pool.truth, k, target, folds, options.seed)
        bounds = np.cumsum([0] + [present[n].truth.size for n in names])
        measured = {n: metrics(oof[bounds[i] : bounds[i + 1]], present[n].truth, labels) for i, n in enumerate(names)}
        method, detail = ThresholdMethod.KFOLD, f"val+test pooled ({pool.truth.size} images), {folds}-fold out-of-fold figures"
    else:
        thresholds = choose(present["val"].scores, present["val"].truth, k, target)
        measured = {n: metrics(decide(s.scores, thresholds), s.truth, labels) for n, s in present.items()}
        method, detail = ThresholdMethod.VAL, "chosen on val (val figures in-sample, test held out)"
    return {
        "target_precision": target,
        "method": method.value,
        "method_detail": detail,
        "classes": dict(zip(labels, thresholds)),  # unrounded: a rounded-up cut would drop its own image
        "splits": measured,
    }


def bundle_entry(selected: Mapping[str, Any]) -> dict[str, Any]:
    """What the bundle records (manifest.json and the embedded tledge.json)."""
    return {
        "target_precision": selected["target_precision"],
        "method": selected["method"],
        "classes": dict(selected["classes"]),
        "unknown_label": "unknown",
    }


__all__ = [
    "DEFAULT_TARGET_PRECISION",
    "SplitScores",
    "ThresholdMethod",
    "ThresholdOptions",
    "UNKNOWN",
    "bundle_entry",
    "choose",
    "decide",
    "metrics",
    "out_of_fold",
    "pick_threshold",
    "select",
]
