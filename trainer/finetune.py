"""The fine-tuning stage: the top blocks and the head, trained on cached activations.

After the head has been fitted on pooled features, the blocks above the cut are unfrozen
(BatchNorm stays in inference mode with its statistics frozen) and trained with the head
on the activations cached at the cut (trainer.activations), so an epoch costs only the
top of the network. The schedule is made for small data:

- a short linear warm-up (`warmup_epochs`) from 0 to the learning rate, then cosine
  decay to 0 over the remaining epochs;
- early stopping on the (unweighted) validation loss, the best epoch restored. The
  starting point, the head alone, counts as epoch 0: if no epoch beats it, the stage
  is discarded and the head-only model is kept.

Selection uses the validation split only; the test split is never seen here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer import cut as cut_lib
from trainer.config import FineTuneOptions
from trainer.deps import require_keras, require_tensorflow


@dataclass
class TopData:
    """Cached activations of one split: x (float16, N x H x W x C) and labels."""

    x: np.ndarray
    y: np.ndarray


def cut_dataset(x: np.ndarray, y: np.ndarray, num_classes: int, batch: int, seed: int, weights: np.ndarray | None = None, shuffle: bool = False) -> Any:
    """(activations float32, one-hot[, sample weight]) batches from float16 activations.

    The arrays stay float16 in memory; each batch is cast as it is taken.
    """
    tf = require_tensorflow()
    onehot = np.eye(num_classes, dtype=np.float32)[y]
    parts: tuple[Any, ...] = (x, onehot) if weights is None else (x, onehot, weights.astype(np.float32))
    ds = tf.data.Dataset.from_tensor_slices(parts)
    if shuffle:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch)
    ds = ds.map(lambda x, *rest: (tf.cast(x, tf.float32), *rest), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def schedule(learning_rate: float, steps_per_epoch: int, epochs: int, warmup_epochs: float) -> Any:
    """Linear warm-up from 0 over `warmup_epochs`, then cosine decay to 0 by the last epoch."""
    keras = require_keras()
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, int(round(warmup_epochs * steps_per_epoch)))
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=max(1, total - warmup), warmup_target=learning_rate, warmup_steps=warmup)


class BestOnValLoss:
    """Early stopping on val loss with the best epoch restored; epoch 0 is the start.

    A Keras callback (built by `make`), kept as a plain class so its state is testable.
    """

    @staticmethod
    def make(start_loss: float, patience: int, on_epoch: Any = None) -> Any:
        keras = require_keras()

        class _Callback(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.best_loss = start_loss
                self.best_epoch = 0
                self.best_weights: list[np.ndarray] | None = None
                self.wait = 0
                self.epoch_s: list[float] = []
                self._tick = 0.0

            def on_train_begin(self, logs: Any = None) -> None:
                self.best_weights = self.model.get_weights()

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self._tick = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                self.epoch_s.append(time.perf_counter() - self._tick)
                loss = float((logs or {}).get("val_loss", np.inf))
                if loss < self.best_loss:
                    self.best_loss, self.best_epoch, self.wait = loss, epoch + 1, 0
                    self.best_weights = self.model.get_weights()
                else:
                    self.wait += 1
                    if self.wait >= patience:
                        self.model.stop_training = True
                if on_epoch:
                    on_epoch(1)

            def on_train_end(self, logs: Any = None) -> None:
                if self.best_weights is not None:
                    self.model.set_weights(self.best_weights)

        return _Callback()


def evaluate_top(top: Any, data: TopData, num_classes: int, batch: int = 128) -> tuple[np.ndarray, float]:
    """(softmax outputs, unweighted mean cross-entropy) of `top` on cached activations."""
    tf = require_tensorflow()
    fn = tf.function(lambda t: top(tf.cast(t, tf.float32), training=False))
    outs = [fn(tf.constant(data.x[i : i + batch])).numpy() for i in range(0, len(data.x), batch)]
    probs = np.concatenate(outs) if outs else np.zeros((0, num_classes), dtype=np.float32)
    picked = probs[np.arange(len(data.y)), data.y] if len(data.y) else np.zeros(0)
    loss = float(np.mean(-np.log(np.clip(picked, 1e-7, 1.0)))) if len(picked) else float("nan")
    return probs, loss


def fine_tune_top(
    halves: cut_lib.Halves,
    train: TopData,
    val: TopData,
    num_classes: int,
    options: FineTuneOptions,
    seed: int,
    sample_weights: np.ndarray | None = None,
    on_epoch: Any = None,
) -> dict[str, Any]:
    """Train the blocks above the cut and the head on cached activations (val selects).

    Leaves `halves.top` (and so the classifier it shares layers with) at the best epoch
    by validation loss, or at its starting weights when no epoch improved on them.
    Returns a JSON-ready account: epochs run, best epoch, losses, per-epoch seconds.
    """
    keras = require_keras()
    keras.utils.set_random_seed(seed)
    _, start_loss = evaluate_top(halves.top, val, num_classes)
    unfrozen = cut_lib.set_trainable(halves, True)
    steps = int(np.ceil(len(train.y) / options.batch_size))
    halves.top.compile(
        optimizer=keras.optimizers.Adam(schedule(options.learning_rate, steps, options.epochs, options.warmup_epochs)),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    best = BestOnValLoss.make(start_loss, options.patience, on_epoch)
    data = cut_dataset(train.x, train.y, num_classes, options.batch_size, seed, sample_weights, shuffle=True)
    validation = cut_dataset(val.x, val.y, num_classes, 256, seed)
    try:
        history = halves.top.fit(data, epochs=options.epochs, validation_data=validation, callbacks=[best], verbose=0)
    finally:
        cut_lib.set_trainable(halves, False)
    rows = history.history
    return {
        "layers_unfrozen": unfrozen,
        "epochs_run": len(rows.get("loss", [])),
        "best_epoch": best.best_epoch,  # 0: no epoch beat the head alone
        "val_loss_before": round(start_loss, 4),
        "val_loss_best": round(best.best_loss, 4),
        "epoch_s": [round(s, 3) for s in best.epoch_s],
        "history": {k: [float(v) for v in rows[k]] for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in rows},
        "rows": int(len(train.y)),
    }
