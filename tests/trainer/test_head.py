"""The NumPy head (trainer.head) follows Keras' rules: the same loss and gradients as a
compiled Keras head, the same Adam steps, the same early stopping and restored weights;
and it learns what a Keras head learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer.config import DataOptions, HyperParams, ModelOptions, TrainOptions
from trainer.features.training import FeatureRows
from trainer.head import Adam, DenseHead, class_weights, fit_dense, loss_and_gradients, row_weights, smoothed


def _features(seed: int, rows: int, dim: int, classes: int, counts: tuple[int, ...] | None = None, spread: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Noisy class-dependent feature rows (imbalanced when `counts` says so)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), counts) if counts else rng.integers(0, classes, rows)
    centres = rng.normal(0, 1, (classes, dim)).astype(np.float32)
    x = centres[y] + rng.normal(0, spread, (len(y), dim)).astype(np.float32)
    return np.maximum(x, 0).astype(np.float32), y  # pooled ReLU features are >= 0


def _rows(x: np.ndarray, y: np.ndarray) -> FeatureRows:
    return FeatureRows(x, y, np.arange(len(y)), np.ones(len(y), dtype=bool))


def _options(tmp_path: Path, **hyper: object) -> TrainOptions:
    return TrainOptions(data=DataOptions(tmp_path), model=ModelOptions(dropout=0.0), hyper=HyperParams(**hyper), seed=3)  # type: ignore[arg-type]


def test_steps_match_keras_loss_gradients_and_adam() -> None:
    """Ten Adam steps on weighted, label-smoothed, imbalanced batches: NumPy and a compiled
    Keras head (dropout 0, same start, same batches) end at the same weights and losses."""
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    from trainer import model as model_lib

    classes, smoothing, rate = 3, 0.1, 0.01
    x, y = _features(1, 0, 24, classes, counts=(50, 20, 9))
    weights = class_weights(y, classes)
    w = row_weights(y, classes, balanced=True)
    assert w.dtype == np.float32 and [weights[int(c)] for c in y] == list(w)
    assert (row_weights(y, classes, balanced=False) == 1).all()
    start = DenseHead.glorot(24, classes, np.random.default_rng(0))

    keras_head = model_lib.build_head(24, classes, 0.0)
    keras_head.compile(optimizer=keras.optimizers.Adam(rate), loss=keras.losses.CategoricalCrossentropy(label_smoothing=smoothing))
    keras_head.get_layer(model_lib.OUTPUT_NAME).set_weights([start.kernel, start.bias])
    mine = start.copy()
    optimizer = Adam(rate, [mine.kernel, mine.bias])
    targets, onehot = smoothed(y, classes, smoothing), smoothed(y, classes, 0.0)  # Keras' loss smooths one-hot labels itself
    batches = np.array_split(np.random.default_rng(1).permutation(len(y)), range(16, len(y), 16))[:10]
    for batch in batches:
        with tf.GradientTape() as tape:
            probs = keras_head(x[batch], training=True)
            keras_loss = keras_head.loss(onehot[batch], probs, sample_weight=w[batch])
        grads = tape.gradient(keras_loss, keras_head.trainable_variables)
        loss, g_kernel, g_bias, _ = loss_and_gradients(mine, x[batch], targets[batch], w[batch])
        np.testing.assert_allclose(loss, float(keras_loss), rtol=1e-5)
        np.testing.assert_allclose(g_kernel, grads[0].numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(g_bias, grads[1].numpy(), rtol=1e-4, atol=1e-6)
        keras_head.optimizer.apply(grads, keras_head.trainable_variables)
        optimizer.apply([mine.kernel, mine.bias], [g_kernel, g_bias])
    kernel, bias = keras_head.get_layer(model_lib.OUTPUT_NAME).get_weights()
    np.testing.assert_allclose(mine.kernel, kernel, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mine.bias, bias, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mine.predict(x), keras_head.predict(x, verbose=0), atol=1e-5)


def test_early_stopping_restores_the_best_epoch(tmp_path: Path) -> None:
    """Keras' EarlyStopping(val_loss, patience, restore_best_weights): training stops
    `patience` epochs after the best one, and the head is that epoch's."""
    all_x, all_y = _features(2, 100, 16, 2, spread=6.0)  # noisy and tiny: val loss turns up soon
    x, y, val_x, val_y = all_x[:60], all_y[:60], all_x[60:], all_y[60:]
    options = _options(tmp_path, epochs=200, batch_size=8, learning_rate=0.05, patience=3)
    head, history = fit_dense(x, y, 2, options, seed=5, epochs=200, validation=_rows(val_x, val_y))
    losses = history["val_loss"]
    best = int(np.argmin(losses))
    assert len(losses) == best + 1 + 3 < 200  # stopped three epochs after the best
    assert list(history) == ["accuracy", "loss", "val_accuracy", "val_loss"]  # history.csv's columns, fit's order
    val_loss, *_ = loss_and_gradients(head, val_x, smoothed(val_y, 2, 0.0), np.ones(len(val_y), np.float32))
    assert val_loss == pytest.approx(losses[best], rel=1e-6)  # the best epoch's weights, restored


def test_dropout_is_seeded_and_matters(tmp_path: Path) -> None:
    x, y = _features(4, 80, 16, 2)
    options = _options(tmp_path, epochs=5)
    dropped = TrainOptions(data=options.data, model=ModelOptions(dropout=0.5), hyper=options.hyper, seed=3)
    a, history_a = fit_dense(x, y, 2, dropped, seed=9, epochs=5)
    b, history_b = fit_dense(x, y, 2, dropped, seed=9, epochs=5)
    c, _ = fit_dense(x, y, 2, options, seed=9, epochs=5)
    np.testing.assert_array_equal(a.kernel, b.kernel)  # same seed, same head
    assert history_a == history_b
    assert not np.allclose(a.kernel, c.kernel)  # the dropout masks changed the steps


def test_learns_what_a_keras_head_learns(tmp_path: Path) -> None:
    """Same data, same rules, different random draws: validation accuracy within a few
    points of `keras.Model.fit`'s."""
    keras = pytest.importorskip("keras")
    from trainer.head_keras import compile_head, head_dataset

    classes = 4
    all_x, all_y = _features(5, 800, 32, classes, spread=1.5)
    x, y, val_x, val_y = all_x[:400], all_y[:400], all_x[400:], all_y[400:]
    options = TrainOptions(data=DataOptions(tmp_path), model=ModelOptions(dropout=0.2), hyper=HyperParams(epochs=20, learning_rate=0.01, patience=5), seed=1)
    head, _ = fit_dense(x, y, classes, options, options.seed, 20, _rows(val_x, val_y))
    ours = float((head.predict(val_x).argmax(1) == val_y).mean())
    keras.utils.set_random_seed(1)
    keras_head = compile_head(options, 32, classes)
    keras_head.fit(head_dataset(x, y, classes, 32, 1, row_weights(y, classes, balanced=True), shuffle=True), epochs=20, shuffle=False, verbose=0)  # the dataset shuffles itself
    theirs = float((keras_head.predict(val_x, verbose=0).argmax(1) == val_y).mean())
    assert ours > 0.6, (ours, theirs)  # it learned (chance is 0.25)
    assert abs(ours - theirs) <= 0.05, (ours, theirs)
