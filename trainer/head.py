"""The classifier head (dropout + dense softmax) fitted on cached features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer import model as model_lib
from trainer.config import TrainOptions
from trainer.deps import require_keras, require_tensorflow
from trainer.features.training import FeatureRows
from trainer.head_loop import fit_epochs, known_steps
from trainer.progress import Reporter, keras_progress

History = list[dict[str, Any]]  # one row per epoch: stage, epoch, loss, accuracy, val_loss, val_accuracy


@dataclass(frozen=True)
class HeadFit:
    """A fitted head, what happened while fitting it, and its epochs."""

    head: Any  # keras.Model: features in, softmax out
    info: dict[str, Any]  # epochs_run, best_epoch, stopped_early, train_rows
    history: tuple[dict[str, Any], ...]


def class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    """n / (classes * count): each class weighs the same in the loss in total."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    return {i: float(len(y) / (num_classes * c)) if c else 1.0 for i, c in enumerate(counts)}


def compile_head(options: TrainOptions, dim: int, num_classes: int, replicas: int = 1) -> Any:
    """A fresh head for `dim` features, compiled with the run's optimizer and loss."""
    keras = require_keras()
    head = model_lib.build_head(dim, num_classes, options.model.dropout)
    head.compile(
        optimizer=keras.optimizers.Adam(options.hyper.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=options.hyper.label_smoothing),
        metrics=["accuracy"],
        # A head step is tiny: run many per call instead of one Python round trip each
        # (one device only: Keras' multi-step loop fails under MirroredStrategy).
        steps_per_execution=16 if replicas == 1 else 1,
    )
    return head


def head_dataset(x: np.ndarray, y: np.ndarray, num_classes: int, batch: int, seed: int, weights: dict[int, float] | None = None, shuffle: bool = False) -> Any:
    """A cached tf.data pipeline of (features, one-hot[, class weight]) batches.

    Prebuilt and cached, an epoch over it costs a few ms of overhead instead of the time
    Keras spends re-wrapping NumPy arrays every epoch.
    """
    tf = require_tensorflow()
    onehot = np.eye(num_classes, dtype=np.float32)[y]
    parts: tuple[Any, ...] = (x, onehot)
    if weights is not None:
        parts += (np.array([weights[int(c)] for c in y], dtype=np.float32),)
    ds = tf.data.Dataset.from_tensor_slices(parts).cache()
    if shuffle:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


def fit_compiled(head: Any, data: Any, epochs: int, validation: Any | None = None, callbacks: list[Any] | None = None, replicas: int = 1) -> dict[str, list[float]]:
    """Fit compiled `head` on `head_dataset` batches; `History.history` of the epochs run.

    On one device, tledge's own epoch loop (trainer.head_loop: the same arithmetic and
    history as `fit`, without its per-epoch cost); under several replicas, `fit`.
    """
    steps = known_steps(data) if replicas == 1 else None
    if steps is not None:
        return fit_epochs(head, data, steps, validation, epochs, callbacks or [])
    return head.fit(data, epochs=epochs, validation_data=validation, callbacks=callbacks, shuffle=False, verbose=0).history  # the dataset shuffles itself


def history_rows(stage: str, history: dict[str, list[float]]) -> History:
    """Keras' History.history as one row per epoch, tagged with `stage`."""
    n = len(history.get("loss", []))
    return [{"stage": stage, "epoch": i + 1, **{k: float(v[i]) for k, v in history.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")}} for i in range(n)]


def best_epoch(rows: History) -> int:
    """The 1-based epoch with the lowest val_loss (0 without rows)."""
    losses = [r.get("val_loss", np.inf) for r in rows]
    return int(np.argmin(losses)) + 1 if losses else 0


def fit_head(options: TrainOptions, rows: dict[str, FeatureRows], num_classes: int, strategy: Any, reporter: Reporter) -> HeadFit:
    """Fit dropout + dense softmax on cached features; early stopping restores the best epoch."""
    keras = require_keras()
    hyper = options.hyper
    train_rows, val_rows = rows["train"], rows["val"]
    keras.utils.set_random_seed(options.seed)
    with strategy.scope():
        head = compile_head(options, train_rows.x.shape[1], num_classes, int(strategy.num_replicas_in_sync))
    callbacks: list[Any] = []
    validation = None
    if len(val_rows.y):
        validation = head_dataset(val_rows.x, val_rows.y, num_classes, 1024, options.seed)
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=hyper.patience, restore_best_weights=True))
    weights = class_weights(train_rows.y, num_classes) if hyper.class_weights else None
    data = head_dataset(train_rows.x, train_rows.y, num_classes, hyper.batch_size, options.seed, weights, shuffle=True)
    with reporter.task("head", hyper.epochs, "epochs") as advance:
        callbacks.append(keras_progress(advance))
        logs = fit_compiled(head, data, hyper.epochs, validation, callbacks, int(strategy.num_replicas_in_sync))
    epochs = history_rows("head", logs)
    best = best_epoch(epochs) if validation else len(epochs)
    info = {"epochs_run": len(epochs), "best_epoch": best, "stopped_early": len(epochs) < hyper.epochs, "train_rows": int(len(train_rows.y))}
    return HeadFit(head, info, tuple(epochs))
