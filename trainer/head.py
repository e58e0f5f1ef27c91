"""The classifier head (dropout + dense softmax), fitted on cached features.

The head is one dense layer over pooled features that are already computed: an epoch is
a few milliseconds of arithmetic. It is fitted here in NumPy, by the rules a compiled
Keras head follows (`keras.Model.fit` with Adam, categorical cross-entropy with label
smoothing, class weights as sample weights, dropout, early stopping on val_loss that
restores the best epoch's weights), so that a run on a converted backbone needs no
TensorFlow at all: importing it and building a Keras head cost the train seconds on a
2-core machine (BENCHMARKS.md, section 9, seventh round).
`tests/trainer/test_head.py` checks the arithmetic step by step against Keras' own
optimizer and loss.

Under `--distribute mirrored` the head is fitted by Keras under MirroredStrategy, as
asked; its weights come back as the same `DenseHead`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from trainer.config import Distribute, TrainOptions
from trainer.distribute import NUMPY_RECORD
from trainer.progress import Reporter

if TYPE_CHECKING:
    from trainer.features.training import FeatureRows

History = list[dict[str, Any]]  # one row per epoch: stage, epoch, loss, accuracy, val_loss, val_accuracy

#: Adam's constants, Keras' defaults (keras.optimizers.Adam).
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7


@dataclass
class DenseHead:
    """Dense softmax weights: features (n, dim) -> class probabilities (n, classes)."""

    kernel: np.ndarray  # (dim, classes) float32
    bias: np.ndarray  # (classes,) float32

    @classmethod
    def glorot(cls, dim: int, classes: int, rng: np.random.Generator) -> "DenseHead":
        """Keras' Dense initialisation: Glorot-uniform kernel, zero bias."""
        limit = math.sqrt(6.0 / (dim + classes))
        return cls(rng.uniform(-limit, limit, (dim, classes)).astype(np.float32), np.zeros(classes, np.float32))

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32) @ self.kernel + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities of rows `x`, float32."""
        return np.exp(_log_softmax(self.logits(x)))

    def copy(self) -> "DenseHead":
        return DenseHead(self.kernel.copy(), self.bias.copy())


@dataclass(frozen=True)
class HeadFit:
    """A fitted head, what happened while fitting it, and its epochs."""

    head: DenseHead
    info: dict[str, Any]  # epochs_run, best_epoch, stopped_early, train_rows
    history: tuple[dict[str, Any], ...]
    distribute: dict[str, Any]  # metrics.json's record of the strategy that fitted it (trainer.distribute)


def class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    """n / (classes * count): each class weighs the same in the loss in total."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    return {i: float(len(y) / (num_classes * c)) if c else 1.0 for i, c in enumerate(counts)}


def row_weights(y: np.ndarray, num_classes: int, balanced: bool) -> np.ndarray:
    """Each row's weight in the loss: its class's `class_weights` when `balanced`, else 1."""
    if not balanced:
        return np.ones(len(y), np.float32)
    table = class_weights(y, num_classes)
    return np.array([table[int(c)] for c in y], np.float32)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def smoothed(y: np.ndarray, num_classes: int, smoothing: float) -> np.ndarray:
    """One-hot targets with label smoothing, as Keras' CategoricalCrossentropy makes them."""
    onehot = np.eye(num_classes, dtype=np.float32)[y]
    return onehot * (1.0 - smoothing) + smoothing / num_classes if smoothing else onehot


def batch_loss(head: DenseHead, x: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """The weighted mean cross-entropy of rows `x` (Keras' "sum over batch size": weighted
    sum / rows), and the probabilities."""
    log_probs = _log_softmax(head.logits(x))
    per_row = -(targets * log_probs).sum(axis=1)
    return float((per_row * weights).sum() / len(x)), np.exp(log_probs)


def loss_and_gradients(head: DenseHead, x: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """One batch: `batch_loss`, its gradients for kernel and bias, and the probabilities."""
    loss, probs = batch_loss(head, x, targets, weights)
    d_logits = (probs - targets) * (weights / len(x))[:, None]
    return loss, x.T @ d_logits, d_logits.sum(axis=0), probs


class Adam:
    """Keras' Adam update (keras.optimizers.Adam, default betas and epsilon)."""

    def __init__(self, learning_rate: float, params: list[np.ndarray]) -> None:
        self.learning_rate = learning_rate
        self.steps = 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def apply(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        """Update `params` in place."""
        self.steps += 1
        alpha = self.learning_rate * math.sqrt(1 - BETA_2**self.steps) / (1 - BETA_1**self.steps)
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m += (g - m) * (1 - BETA_1)
            v += (g * g - v) * (1 - BETA_2)
            p -= (alpha * m / (np.sqrt(v) + EPSILON)).astype(p.dtype)


def fit_dense(
    x: np.ndarray, y: np.ndarray, num_classes: int, options: TrainOptions, seed: int, epochs: int,
    validation: FeatureRows | None = None, on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> tuple[DenseHead, dict[str, list[float]]]:
    """Fit dropout + dense softmax on rows `x` (float32) with labels `y` for up to `epochs`
    epochs, shuffled anew each epoch from `seed`; with `validation`, early stopping on its
    loss (the run's patience) and the best epoch's weights restored. Returns the head and
    what Keras' `History.history` would hold (accuracy, loss[, val_accuracy, val_loss])."""
    hyper = options.hyper
    rng = np.random.default_rng(seed)
    x = np.asarray(x, np.float32)
    head = DenseHead.glorot(x.shape[1], num_classes, rng)
    params = [head.kernel, head.bias]
    optimizer = Adam(hyper.learning_rate, params)
    targets = smoothed(y, num_classes, hyper.label_smoothing)
    weights = row_weights(y, num_classes, hyper.class_weights)
    keep = 1.0 - options.model.dropout
    val_targets = smoothed(validation.y, num_classes, hyper.label_smoothing) if validation is not None else None
    history: dict[str, list[float]] = {}
    best_loss, best, wait = math.inf, None, 0
    for epoch in range(epochs):
        loss_sum, correct = 0.0, 0
        for batch in np.array_split(rng.permutation(len(y)), range(hyper.batch_size, len(y), hyper.batch_size)):
            xb = x[batch]
            if keep < 1.0:  # inverted dropout, as Keras' Dropout in training
                xb = xb * ((rng.random(xb.shape, dtype=np.float32) < keep) / np.float32(keep))
            loss, g_kernel, g_bias, probs = loss_and_gradients(head, xb, targets[batch], weights[batch])
            optimizer.apply(params, [g_kernel, g_bias])
            loss_sum += loss * len(batch)  # fit's epoch loss: batch losses weighted by batch size
            correct += int((probs.argmax(axis=1) == y[batch]).sum())
        logs = {"accuracy": correct / len(y), "loss": loss_sum / len(y)}  # fit's key order (history.csv's columns)
        if validation is not None and val_targets is not None:
            val_loss, val_probs = batch_loss(head, validation.x, val_targets, np.ones(len(validation.y), np.float32))
            logs.update(val_accuracy=float((val_probs.argmax(axis=1) == validation.y).mean()), val_loss=val_loss)
        for key, value in logs.items():
            history.setdefault(key, []).append(float(value))
        if on_epoch is not None:
            on_epoch(logs)
        if validation is None:
            continue
        # Keras' EarlyStopping(monitor="val_loss", patience, restore_best_weights=True).
        wait += 1
        if logs["val_loss"] < best_loss:
            best_loss, best, wait = logs["val_loss"], head.copy(), 0
        elif wait >= hyper.patience and epoch > 0:
            break
    if best is not None:
        head = best
    return head, history


def history_rows(stage: str, history: dict[str, list[float]]) -> History:
    """Keras' History.history as one row per epoch, tagged with `stage`."""
    n = len(history.get("loss", []))
    return [{"stage": stage, "epoch": i + 1, **{k: float(v[i]) for k, v in history.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")}} for i in range(n)]


def best_epoch(rows: History) -> int:
    """The 1-based epoch with the lowest val_loss (0 without rows)."""
    losses = [r.get("val_loss", np.inf) for r in rows]
    return int(np.argmin(losses)) + 1 if losses else 0


def fit_head(options: TrainOptions, rows: dict[str, FeatureRows], num_classes: int, reporter: Reporter) -> HeadFit:
    """Fit dropout + dense softmax on cached features; early stopping restores the best epoch."""
    hyper = options.hyper
    train_rows, val_rows = rows["train"], rows["val"]
    validation = val_rows if len(val_rows.y) else None
    with reporter.task("head", hyper.epochs, "epochs") as advance:
        def progress(logs: dict[str, float]) -> None:
            advance(1, **{k: float(logs[k]) for k in ("loss", "val_accuracy") if k in logs})

        if options.runtime.distribute is Distribute.MIRRORED:
            from trainer.head_keras import fit_mirrored

            head, logs, distribute = fit_mirrored(options, train_rows, validation, num_classes, progress)
        else:
            head, logs = fit_dense(train_rows.x, train_rows.y, num_classes, options, options.seed, hyper.epochs, validation, progress)
            distribute = dict(NUMPY_RECORD)
    epochs = history_rows("head", logs)
    best = best_epoch(epochs) if validation is not None else len(epochs)
    info = {"epochs_run": len(epochs), "best_epoch": best, "stopped_early": len(epochs) < hyper.epochs, "train_rows": int(len(train_rows.y))}
    return HeadFit(head, info, tuple(epochs), distribute)
