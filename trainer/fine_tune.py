"""The optional second stage: unfreeze the top backbone layers (BatchNorm stays frozen),
train the whole classifier at a low rate on streamed images, and keep the result only
when validation accuracy improves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer import model as model_lib
from trainer.config import TrainOptions
from trainer.dataset import Dataset
from trainer.deps import require_keras
from trainer.evaluate import classification_metrics
from trainer.head import class_weights, history_rows
from trainer.progress import Reporter, keras_progress
from trainer.stream import predict_items, training_batches


@dataclass(frozen=True)
class FineTuneResult:
    """What fine-tuning did; `val`/`test` are the new metrics when it was kept."""

    info: dict[str, Any]  # ran, layers_unfrozen, val_accuracy_before/after, helped, kept
    history: tuple[dict[str, Any], ...] = ()
    val: dict[str, Any] | None = None
    test: dict[str, Any] | None = None

    @property
    def kept(self) -> bool:
        return bool(self.info.get("kept"))


def _items(dataset: Dataset, split: str) -> list[tuple[str, int]]:
    return [(str(s.path), s.label) for s in dataset.splits[split]]


def fine_tune(options: TrainOptions, classifier: Any, dataset: Dataset, val_before: float | None, strategy: Any, reporter: Reporter) -> FineTuneResult:
    """Fine-tune `classifier` in place; its weights are restored when val accuracy does
    not improve on `val_before`. Needs validation images (the caller checks the plan)."""
    keras = require_keras()
    hyper = options.hyper
    labels = dataset.labels
    size = (options.model.image_size,) * 2
    policy, threads = options.model.resize, options.runtime.threads
    saved = classifier.get_weights()
    with strategy.scope():
        unfrozen = model_lib.unfreeze_top(classifier, hyper.fine_tune_layers)
        classifier.compile(
            optimizer=keras.optimizers.Adam(hyper.fine_tune_learning_rate),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=hyper.label_smoothing),
            metrics=["accuracy"],
        )
    train_items, val_items = _items(dataset, "train"), _items(dataset, "val")
    weights = class_weights(np.array([label for _, label in train_items], dtype=np.int64), len(labels)) if hyper.class_weights else None
    train_data = training_batches(train_items, size, policy, len(labels), hyper.batch_size, options.seed, weights, threads)
    val_data = training_batches(val_items, size, policy, len(labels), hyper.batch_size, threads=threads)
    with reporter.task("fine-tune", hyper.fine_tune_epochs, "epochs") as advance:
        history = classifier.fit(
            train_data, epochs=hyper.fine_tune_epochs, validation_data=val_data, verbose=0,
            callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True), keras_progress(advance)],
        )
    y_val, p_val, _ = predict_items(classifier, val_items, size, policy, threads=threads)
    after = classification_metrics(y_val, p_val, labels)
    helped = after["accuracy"] is not None and val_before is not None and after["accuracy"] > val_before
    val = test = None
    if helped:
        val = after
        test_items = _items(dataset, "test")
        if test_items:
            y_te, p_te, _ = predict_items(classifier, test_items, size, policy, threads=threads)
            test = classification_metrics(y_te, p_te, labels) if len(y_te) else None
    else:
        classifier.set_weights(saved)
    model_lib.unfreeze_top(classifier, 0)
    classifier.get_layer(model_lib.BACKBONE_NAME).trainable = False
    verdict = "kept" if helped else "discarded (no val improvement)"
    reporter.info(f"fine-tune of {unfrozen} layers: val accuracy {val_before} -> {after['accuracy']}, {verdict}")
    info = {"ran": True, "layers_unfrozen": unfrozen, "val_accuracy_before": val_before, "val_accuracy_after": after["accuracy"], "helped": helped, "kept": helped}
    return FineTuneResult(info, tuple(history_rows("fine_tune", history.history)), val, test)
