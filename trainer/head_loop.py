"""The head's epoch loop on one device: the arithmetic of `keras.Model.fit`, without its
fixed cost per epoch.

A head epoch is a few milliseconds of arithmetic (a dense layer on cached features), and
`fit` spends several times that around it: its epoch iterator, callback list, a full
`evaluate` call per epoch and the conversion of its logs. Here one compiled function
runs an epoch's training steps and another the validation pass; everything that decides
the result is `fit`'s own: the compiled loss and optimizer of the model, its dropout
seed generator (drawn once per step, in the same order), the dataset's shuffles (see
`fit_epochs`), batch-size-weighted epoch means, and the same Keras callbacks (early
stopping, progress) called at the same points. The history it returns is the history
`fit` returns for the same seed (`tests/trainer/test_head_loop.py` checks it epoch by
epoch).
"""

from __future__ import annotations

from typing import Any

from trainer.deps import require_keras, require_tensorflow


def known_steps(data: Any) -> int | None:
    """Batches per epoch of a tf.data dataset, or None when TensorFlow cannot tell."""
    tf = require_tensorflow()
    steps = int(data.cardinality())
    return steps if steps >= 0 and steps != int(tf.data.INFINITE_CARDINALITY) else None


def _train_epoch(head: Any, steps: int) -> Any:
    """A compiled epoch: `steps` training steps from an iterator of (x, one-hot[, weight])."""
    tf, keras = require_tensorflow(), require_keras()
    loss_mean, accuracy = keras.metrics.Mean(), keras.metrics.CategoricalAccuracy()

    @tf.function
    def epoch(iterator: Any) -> tuple[Any, Any]:
        loss_mean.reset_state()
        accuracy.reset_state()
        for _ in tf.range(steps):
            x, y, *weight = next(iterator)
            sample_weight = weight[0] if weight else None
            with tf.GradientTape() as tape:
                probs = head(x, training=True)
                loss = head.loss(y, probs, sample_weight=sample_weight)
            head.optimizer.apply(tape.gradient(loss, head.trainable_variables), head.trainable_variables)
            loss_mean.update_state(loss, sample_weight=tf.shape(x)[0])  # fit: weighted by batch size
            accuracy.update_state(y, probs)  # fit: the weights scale the loss, not this
        return loss_mean.result(), accuracy.result()

    return epoch


def _validate(head: Any, validation: Any) -> Any:
    """A compiled validation pass: loss and accuracy over all batches, as `evaluate` gives them."""
    tf, keras = require_tensorflow(), require_keras()
    loss_mean, accuracy = keras.metrics.Mean(), keras.metrics.CategoricalAccuracy()
    # The batches once, as tensors: a dataset iterated inside the function is rebuilt on
    # every call, which costs more than the pass itself. (A few batches: val / 1024.)
    batches = list(validation)

    @tf.function
    def run() -> tuple[Any, Any]:
        loss_mean.reset_state()
        accuracy.reset_state()
        for x, y in batches:
            probs = head(x, training=False)
            loss_mean.update_state(head.loss(y, probs), sample_weight=tf.shape(x)[0])
            accuracy.update_state(y, probs)
        return loss_mean.result(), accuracy.result()

    return run


def fit_epochs(head: Any, data: Any, steps: int, validation: Any | None, epochs: int, callbacks: list[Any]) -> dict[str, list[float]]:
    """Train compiled `head` on `data` (`steps` batches per epoch) for up to `epochs` epochs;
    returns what `History.history` would hold (loss, accuracy[, val_loss, val_accuracy])."""
    head.optimizer.build(head.trainable_variables)
    epoch_fn = _train_epoch(head, steps)
    validate = _validate(head, validation) if validation is not None else None
    for callback in callbacks:
        callback.set_model(head)
    head.stop_training = False
    for callback in callbacks:
        callback.on_train_begin()
    history: dict[str, list[float]] = {}
    logs: dict[str, float] = {}
    for epoch in range(epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        loss, accuracy = epoch_fn(iter(data))
        # fit's epoch iterator opens the next epoch's iterator as one ends and opens
        # another when that epoch begins; each opening draws the next reshuffle seed, so
        # one more is opened here: the same batch orders as fit, epoch for epoch.
        iter(data)
        logs = {"accuracy": float(accuracy), "loss": float(loss)}  # fit's key order (history.csv's columns)
        if validate is not None:
            val_loss, val_accuracy = validate()
            logs.update(val_accuracy=float(val_accuracy), val_loss=float(val_loss))
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        if head.stop_training:
            break
    head.optimizer.finalize_variable_values(head.trainable_weights)
    for callback in callbacks:
        callback.on_train_end(logs)
    return history
