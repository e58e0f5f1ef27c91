"""The head fitted by Keras under MirroredStrategy (`--distribute mirrored`); every other
run fits it in NumPy (trainer.head)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from trainer import model as model_lib
from trainer.config import TrainOptions
from trainer.deps import require_keras, require_tensorflow
from trainer.features.training import FeatureRows
from trainer.head import DenseHead, row_weights


def compile_head(options: TrainOptions, dim: int, num_classes: int) -> Any:
    """A fresh Keras head for `dim` features, compiled with the run's optimizer and loss."""
    keras = require_keras()
    head = model_lib.build_head(dim, num_classes, options.model.dropout)
    head.compile(
        optimizer=keras.optimizers.Adam(options.hyper.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=options.hyper.label_smoothing),
        metrics=["accuracy"],
    )
    return head


def head_dataset(x: np.ndarray, y: np.ndarray, num_classes: int, batch: int, seed: int, weights: np.ndarray | None = None, shuffle: bool = False) -> Any:
    """A cached tf.data pipeline of (features, one-hot[, row weight]) batches."""
    tf = require_tensorflow()
    onehot = np.eye(num_classes, dtype=np.float32)[y]
    parts: tuple[Any, ...] = (x, onehot)
    if weights is not None:
        parts += (weights,)
    ds = tf.data.Dataset.from_tensor_slices(parts).cache()
    if shuffle:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


def fit_mirrored(
    options: TrainOptions, train: FeatureRows, validation: FeatureRows | None, num_classes: int, on_epoch: Callable[[dict[str, float]], None]
) -> tuple[DenseHead, dict[str, list[float]], dict[str, Any]]:
    """`keras.Model.fit` of the head under MirroredStrategy over every visible device: the
    head, Keras' history, and metrics.json's record of the strategy."""
    keras = require_keras()
    from trainer.distribute import mirrored_strategy, strategy_record

    hyper = options.hyper
    keras.utils.set_random_seed(options.seed)
    strategy = mirrored_strategy()
    with strategy.scope():
        head = compile_head(options, train.x.shape[1], num_classes)
    callbacks: list[Any] = [keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: on_epoch(dict(logs or {})))]
    val_data = None
    if validation is not None:
        val_data = head_dataset(validation.x, validation.y, num_classes, 1024, options.seed)
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=hyper.patience, restore_best_weights=True))
    weights = row_weights(train.y, num_classes, balanced=True) if hyper.class_weights else None
    data = head_dataset(train.x, train.y, num_classes, hyper.batch_size, options.seed, weights, shuffle=True)
    logs = head.fit(data, epochs=hyper.epochs, validation_data=val_data, callbacks=callbacks, shuffle=False, verbose=0).history  # the dataset shuffles itself
    kernel, bias = head.get_layer(model_lib.OUTPUT_NAME).get_weights()
    return DenseHead(np.asarray(kernel, np.float32), np.asarray(bias, np.float32)), logs, strategy_record(strategy)
