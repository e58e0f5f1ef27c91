"""The head's own epoch loop (trainer.head_loop) gives what `keras.Model.fit` gives: the
same history epoch by epoch, the same early stop and the same restored weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer.config import DataOptions, HyperParams, ModelOptions, TrainOptions
from trainer.head import class_weights, compile_head, head_dataset
from trainer.head_loop import fit_epochs, known_steps

pytest.importorskip("tensorflow")


def _features(seed: int, rows: int, dim: int, classes: int, counts: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Noisy class-dependent feature rows (imbalanced when `counts` says so)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), counts) if counts else rng.integers(0, classes, rows)
    centres = rng.normal(0, 1, (classes, dim)).astype(np.float32)
    x = centres[y] + rng.normal(0, 2.5, (len(y), dim)).astype(np.float32)
    return np.maximum(x, 0).astype(np.float32), y  # pooled ReLU features are >= 0


def _fit(options: TrainOptions, loop: bool, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], classes: int) -> tuple[dict[str, list[float]], list[np.ndarray]]:
    import keras

    keras.utils.set_random_seed(options.seed)
    head = compile_head(options, train[0].shape[1], classes)
    weights = class_weights(train[1], classes)
    data = head_dataset(train[0], train[1], classes, options.hyper.batch_size, options.seed, weights, shuffle=True)
    validation = head_dataset(val[0], val[1], classes, 1024, options.seed)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=options.hyper.patience, restore_best_weights=True)
    if loop:
        history = fit_epochs(head, data, known_steps(data), validation, options.hyper.epochs, [stop])
    else:
        history = head.fit(data, epochs=options.hyper.epochs, validation_data=validation, callbacks=[stop], shuffle=False, verbose=0).history
    return history, head.get_weights()


@pytest.mark.parametrize("patience", [2, 50])  # stops early / runs every epoch
def test_loop_matches_keras_fit_epoch_by_epoch(tmp_path: Path, patience: int) -> None:
    classes = 3
    options = TrainOptions(
        data=DataOptions(tmp_path), model=ModelOptions(dropout=0.3),
        hyper=HyperParams(epochs=30, batch_size=16, learning_rate=0.05, label_smoothing=0.1, patience=patience), seed=7,
    )
    train = _features(1, 0, 24, classes, counts=(50, 20, 9))  # imbalanced: class weights differ; last batch partial
    val = _features(2, 40, 24, classes)
    expected, expected_weights = _fit(options, False, train, val, classes)
    got, got_weights = _fit(options, True, train, val, classes)

    assert list(got) == list(expected)  # the same columns in the same order (history.csv)
    assert len(got["loss"]) == len(expected["loss"])
    if patience == 2:
        assert len(got["loss"]) < options.hyper.epochs, "this case is meant to stop early"
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-7, err_msg=key)
    for a, b in zip(got_weights, expected_weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_without_validation_the_loop_ends_where_fit_ends(tmp_path: Path) -> None:
    """The k-fold estimate's fits: no validation, no callbacks (trainer.kfold)."""
    import keras

    from trainer.head import fit_compiled

    options = TrainOptions(data=DataOptions(tmp_path), hyper=HyperParams(epochs=5, batch_size=16, learning_rate=0.01), seed=3)
    x, y = _features(4, 0, 16, 2, counts=(30, 13))
    results = []
    for loop in (False, True):
        keras.utils.set_random_seed(options.seed)
        head = compile_head(options, x.shape[1], 2)
        data = head_dataset(x, y, 2, options.hyper.batch_size, options.seed, class_weights(y, 2), shuffle=True)
        if loop:
            history = fit_compiled(head, data, options.hyper.epochs)
        else:
            history = head.fit(data, epochs=options.hyper.epochs, shuffle=False, verbose=0).history
        results.append((history, head.get_weights()))
    (expected, expected_weights), (got, got_weights) = results
    assert list(got) == list(expected) == ["accuracy", "loss"]
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-7, err_msg=key)
    for a, b in zip(got_weights, expected_weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_known_steps_counts_batches_including_the_partial_one() -> None:
    x, y = _features(3, 37, 8, 2)
    assert known_steps(head_dataset(x, y, 2, 16, 0, shuffle=True)) == 3
