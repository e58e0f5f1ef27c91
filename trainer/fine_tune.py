"""The fine-tuning stage: the top blocks and the head, trained on cached activations.

The backbone is cut at a block boundary (trainer.cut). Everything below the cut stays
frozen (BatchNorm in inference mode), so its output for an image never changes: it is
computed once per image and augmented view and cached at the cut (trainer.activations).
The head is fitted first, on pooled features computed from those activations; then the
blocks above the cut (BatchNorm statistics still frozen) and the head are trained on the
cache, so an epoch costs only the top of the network. The schedule is made for small data:

- a short linear warm-up (`warmup_epochs`) from 0 to the learning rate, then cosine
  decay to 0 over the remaining epochs;
- early stopping on the (unweighted) validation loss with the best epoch restored. The
  starting point, the head alone, counts as epoch 0: if no epoch beats it, the stage is
  discarded and the head-only model is kept.

Selection uses the validation split only; the test split is never read here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainer import cut as cut_lib
from trainer.activations import ActivationCache, CutCheck, activation_pass, cut_key, pooled
from trainer.config import Backbone, FineTuneOptions, TrainOptions
from trainer.dataset import Dataset, Sample
from trainer.deps import require_keras, require_tensorflow
from trainer.features import CLEAN_VIEW, PassStats, options_key
from trainer.features.training import Features, report_pass, view_jobs
from trainer.head import class_weights
from trainer.progress import Reporter

#: `--fine-tune auto`: blocks above the cut per backbone, chosen by the sweep in
#: scripts/sweep_fine_tune.py (BENCHMARKS.md, "Fine-tuning").
AUTO_BLOCKS: dict[Backbone, int] = {Backbone.MOBILENET_V2: 2, Backbone.RESNET50: 1}

Activations = dict[tuple[str, str], np.ndarray]  # (file digest, view) -> float16 (H, W, C)


def resolve_blocks(options: TrainOptions) -> int:
    """The number of blocks to fine-tune: `--fine-tune N`, or the backbone's measured default."""
    blocks = options.hyper.fine_tune.blocks
    return AUTO_BLOCKS[options.model.backbone] if blocks is None else int(blocks)


@dataclass
class CutPass:
    """The classifier cut for fine-tuning, and its cached activations."""

    halves: cut_lib.Halves
    activations: Activations
    stats: PassStats
    check: CutCheck | None

    def features(self, batch: int = 128) -> Features:
        """Pooled features (the head's input) of every cached view, from the frozen top."""
        keys = sorted(self.activations)
        if not keys:
            return {}
        vectors = np.concatenate([pooled(self.halves, np.stack([self.activations[k] for k in keys[i : i + batch]])) for i in range(0, len(keys), batch)])
        return dict(zip(keys, vectors))


def cut_pass(
    options: TrainOptions, dataset: Dataset, augment_val: bool, classifier: Any, digest: str, threads: int, reporter: Reporter
) -> tuple[CutPass, Dataset]:
    """Activations at the cut of every image (augmented views for those that may train),
    and the dataset without the images that could not be decoded."""
    size = options.model.image_size
    backbone = classifier.get_layer("backbone")
    cut = cut_lib.choose_cut(backbone, options.model.backbone, resolve_blocks(options))
    halves = cut_lib.split(classifier, cut)
    key = cut_key(options_key(options.model, digest), cut)
    cache_root = options.runtime.cache_root
    cache = ActivationCache(options.runtime.cache, cache_root, key)
    jobs = view_jobs(dataset, augment_val, options.hyper.fine_tune.augment_views, options.seed)
    reporter.info(f"fine-tune: cut below the top {cut.blocks} block(s), at {cut.layer} {cut.shape}")
    with reporter.task("activations", len(jobs), "images") as advance:
        activations, failures, stats, check = activation_pass(
            jobs, halves, classifier, cache, options.runtime.engine, cache_root, key, size, options.model.resize, threads, on_image=advance
        )
    report_pass(reporter, "activations", failures, stats)
    return CutPass(halves, activations, stats, check), dataset.without(failures)


def top_data(samples: tuple[Sample, ...], activations: Activations, clean_only: bool) -> "TopData":
    """The cached activations of `samples` (all their views, or only the clean one)."""
    by_digest: dict[str, list[tuple[str, np.ndarray]]] = {}
    for (digest, view), act in sorted(activations.items()):
        by_digest.setdefault(digest, []).append((view, act))
    xs, ys = [], []
    for sample in samples:
        for view, act in by_digest.get(sample.digest, ()):
            if clean_only and view != CLEAN_VIEW:
                continue
            xs.append(act)
            ys.append(sample.label)
    shape = next((a.shape for a in activations.values()), (0,))
    x = np.stack(xs) if xs else np.zeros((0, *shape), dtype=np.float16)
    return TopData(x, np.array(ys, dtype=np.int64))


@dataclass(frozen=True)
class FineTuneResult:
    """What the stage did (JSON-ready `info`) and its epochs (`history` rows)."""

    info: dict[str, Any]
    history: tuple[dict[str, Any], ...] = field(default=())

    @property
    def kept(self) -> bool:
        return bool(self.info.get("kept"))


def run_stage(options: TrainOptions, cut: CutPass, dataset: Dataset, reporter: Reporter) -> FineTuneResult:
    """Fine-tune the top of the classifier on the cache; val decides, test is not read."""
    hyper = options.hyper
    labels = dataset.labels
    train = top_data(dataset.splits["train"], cut.activations, clean_only=False)
    val = top_data(dataset.splits["val"], cut.activations, clean_only=True)
    weights = None
    if hyper.class_weights:
        table = class_weights(train.y, len(labels))
        weights = np.array([table[int(c)] for c in train.y], dtype=np.float32)
    probs_before, _ = evaluate_top(cut.halves.top, val, len(labels))
    with reporter.task("fine-tune", hyper.fine_tune.epochs, "epochs") as advance:
        info = fine_tune_top(cut.halves, train, val, len(labels), hyper.fine_tune, options.seed, weights, hyper.label_smoothing, advance)
    probs_after, _ = evaluate_top(cut.halves.top, val, len(labels))
    before, after = _accuracy(probs_before, val.y), _accuracy(probs_after, val.y)
    kept = info["best_epoch"] > 0
    info.update(ran=True, blocks=cut.halves.cut.blocks, cut_layer=cut.halves.cut.layer, val_accuracy_before=before, val_accuracy_after=after, kept=kept, helped=kept)
    verdict = f"kept epoch {info['best_epoch']} of {info['epochs_run']}" if kept else "discarded (no epoch lowered val loss)"
    reporter.info(f"fine-tune of {cut.halves.cut.blocks} block(s) ({info['layers_unfrozen']} layers): val loss {info['val_loss_before']} -> {info['val_loss_best']}, val accuracy {before} -> {after}, {verdict}")
    history = info.pop("history")
    rows = [
        {"stage": "fine_tune", "epoch": i + 1, **{k: history[k][i] for k in history}, "epoch_s": info["epoch_s"][i]}
        for i in range(info["epochs_run"])
    ]
    return FineTuneResult(info, tuple(rows))


def _accuracy(probs: np.ndarray, y: np.ndarray) -> float | None:
    return round(float(np.mean(np.argmax(probs, axis=1) == y)), 4) if len(y) else None


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
    label_smoothing: float = 0.0,
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
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )
    best = BestOnValLoss.make(start_loss, options.patience, on_epoch)
    data = cut_dataset(train.x, train.y, num_classes, options.batch_size, seed, sample_weights, shuffle=True)
    validation = cut_dataset(val.x, val.y, num_classes, 256, seed)
    try:
        history = halves.top.fit(data, epochs=options.epochs, validation_data=validation, callbacks=[best], shuffle=False, verbose=0)  # the dataset shuffles itself
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
