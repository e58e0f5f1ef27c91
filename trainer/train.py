"""`train(options) -> TrainResult`: scan, cache features, fit the head, fine-tune, write the run.

The backbone is frozen, so its features are computed once per image (and per augmented
view) by `trainer.features` and the head (dropout + dense softmax) is fitted on the
cached arrays. The head's weights are then put into the full classifier (raw pixels in,
softmax out), which is saved. An optional second stage unfreezes the top backbone
layers (BatchNorm stays frozen) and keeps the result only when validation improves.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import OutputError
from trainer import __version__
from trainer import model as model_lib
from trainer.config import Distribute, TrainOptions, default_cache_dir
from trainer.dataset import Dataset, Sample, scan
from trainer.deps import require_keras, require_tensorflow
from trainer.evaluate import classification_metrics, decode_batch, plot_confusion, plot_history, predict_images, write_atomic, write_history_csv, write_json
from trainer.features import CLEAN_VIEW, FeatureCache, Job, PassStats, choose_engine, extract, model_key, view_names
from trainer.bundle_writer import remove_stale
from trainer.progress import Reporter, keras_progress

#: Skipped files named one by one on the console (all of them go to data_report.json).
MAX_LISTED = 20


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    labels: tuple[str, ...]
    metrics: dict[str, Any]
    summary: dict[str, Any]
    wall_s: float  # seconds, everything included
    weights: str  # "imagenet", a path, "none" or "random (imagenet unavailable)"
    warnings: tuple[str, ...] = ()

    @property
    def val_accuracy(self) -> float | None:
        return (self.metrics.get("val") or {}).get("accuracy")

    @property
    def test_accuracy(self) -> float | None:
        return (self.metrics.get("test") or {}).get("accuracy")


@dataclass(frozen=True)
class EvalPlan:
    """How accuracy is measured given the data: on val, by k-fold, or not at all."""

    mode: str  # "val", "kfold" or "unavailable"
    reason: str | None = None
    folds: int = 0


@dataclass
class Arrays:
    """Feature rows per split; `groups` ties augmented rows to their image."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    clean: np.ndarray  # bool: the row is the image's clean view


@dataclass
class _Work:
    """Mutable state of one run (internal)."""

    dataset: Dataset
    plan: EvalPlan
    history: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def train(options: TrainOptions, reporter: Reporter | None = None) -> TrainResult:
    """Train a classifier as `options` say and write its run directory. Never mutates `options`."""
    reporter = reporter or Reporter(quiet=options.runtime.quiet)
    start = time.perf_counter()
    keras = require_keras("tledge train")
    threads = options.runtime.threads or os.cpu_count() or 1

    tick = time.perf_counter()
    dataset = scan(options.data.data_dir, options.data.val_split, options.data.test_split, options.seed, options.data.subset, threads)
    for warning in dataset.warnings:
        reporter.warn(warning)
    counts = {s: len(v) for s, v in dataset.splits.items()}
    reporter.info(f"data: {len(dataset.labels)} classes, train {counts['train']} / val {counts['val']} / test {counts['test']} images ({dataset.layout})")
    if dataset.skipped:
        reporter.warn(f"{len(dataset.skipped)} unreadable file(s) skipped (all listed in data_report.json):")
        for item in dataset.skipped[:MAX_LISTED]:
            reporter.info(f"  skipped {item.path}: {item.reason}")
        if len(dataset.skipped) > MAX_LISTED:
            reporter.info(f"  ... and {len(dataset.skipped) - MAX_LISTED} more")
    scan_s = time.perf_counter() - tick

    keras.utils.set_random_seed(options.seed)
    tick = time.perf_counter()
    backbone = model_lib.build_backbone(options.model)
    if backbone.warning:
        reporter.warn(backbone.warning)
    classifier = model_lib.build_classifier(backbone, options.model, len(dataset.labels))
    build_s = time.perf_counter() - tick

    work = _Work(dataset, plan_evaluation(dataset))
    work.timings.update(scan_s=scan_s, build_s=build_s)
    features, stats = _feature_pass(options, work, classifier, backbone.digest, threads, reporter)
    work.plan = plan_evaluation(work.dataset)
    if work.plan.mode != "val":
        reporter.warn(work.plan.reason or "no validation images")
        work.dataset = _merge_val_into_train(work.dataset)

    strategy = choose_strategy(options.runtime.distribute)
    arrays = {s: _arrays(work.dataset.splits[s], features, clean_only=s != "train") for s in ("train", "val", "test")}
    tick = time.perf_counter()
    head, head_info = fit_head(options, arrays, len(dataset.labels), strategy, work, reporter)
    work.timings["head_s"] = time.perf_counter() - tick
    model_lib.copy_head(head, classifier)

    metrics: dict[str, Any] = {}
    for split in ("val", "test"):
        a = arrays[split]
        metrics[split] = classification_metrics(a.y, head.predict(a.x, verbose=0), dataset.labels) if len(a.y) else None
    metrics["evaluation"] = {"mode": work.plan.mode, "reason": work.plan.reason}
    if work.plan.mode == "kfold":
        metrics["val_estimate"] = kfold_estimate(options, arrays["train"], len(dataset.labels), head_info["epochs_run"], work.plan.folds)
    if options.hyper.fine_tune_layers > 0:
        tick = time.perf_counter()
        metrics["fine_tune"] = fine_tune(options, classifier, work, metrics, strategy, reporter)
        work.timings["fine_tune_s"] = time.perf_counter() - tick
    metrics["head"] = head_info
    metrics["features"] = stats.to_json()
    metrics["distribute"] = {"strategy": type(strategy).__name__, "replicas": int(strategy.num_replicas_in_sync)}
    before_write_s = time.perf_counter() - start
    metrics["timings"] = {k: round(v, 3) for k, v in {**work.timings, "before_write_s": before_write_s}.items()}
    run_dir, summary = write_run(options, work, classifier, backbone.weights, metrics, reporter, start)
    wall_s = float(summary["wall_s"])
    return TrainResult(run_dir, dataset.labels, metrics, summary, wall_s, backbone.weights, tuple(reporter.warnings))


# -- data and evaluation plan ----------------------------------------------------------


def plan_evaluation(dataset: Dataset) -> EvalPlan:
    """Validate on val when every class has val images; otherwise the honest fallback.

    Fallbacks: a stratified k-fold estimate over all non-test images when each class has
    at least 2 of them, else no accuracy estimate at all (marked unavailable).
    """
    counts = dataset.counts()
    missing = [name for name in dataset.labels if counts["val"].get(name, 0) == 0]
    if not missing:
        return EvalPlan("val")
    pooled = [counts["train"][n] + counts["val"][n] for n in dataset.labels]
    base = (
        f"class(es) {missing} have no validation images (too few images to split); "
        "training on all train+val images"
    )
    if min(pooled) >= 2:
        folds = min(5, min(pooled))
        return EvalPlan("kfold", f"{base}; validation accuracy is a {folds}-fold cross-validation estimate", folds)
    return EvalPlan("unavailable", f"{base}; a class has a single image, so no accuracy estimate is possible: add images")


def _merge_val_into_train(dataset: Dataset) -> Dataset:
    splits = dict(dataset.splits)
    splits["train"] = tuple(splits["train"]) + tuple(splits.get("val", ()))
    splits["val"] = ()
    return replace(dataset, splits=splits)


def _feature_pass(options: TrainOptions, work: _Work, classifier: Any, digest: str, threads: int, reporter: Reporter) -> tuple[dict[tuple[str, str], np.ndarray], PassStats]:
    size = options.model.image_size
    key = model_key(options.model.backbone.value, options.model.alpha, size, options.model.resize.value, digest)
    cache_root = options.runtime.cache_dir or default_cache_dir()
    cache = FeatureCache(options.runtime.cache, cache_root, key)
    features_model = model_lib.feature_model(classifier)
    train_views = view_names(options.hyper.augment_views, options.seed)
    # Images that may end up in train (val joins it in the fallbacks) get augmented views.
    augmented = work.dataset.splits["train"] + (work.dataset.splits["val"] if work.plan.mode != "val" else ())
    aug_paths = {s.path for s in augmented}
    jobs = [Job(s, train_views if s.path in aug_paths else (CLEAN_VIEW,)) for s in work.dataset.all_samples()]

    def make_engine(probe: np.ndarray) -> Any:
        return choose_engine(features_model, size, options.runtime.engine, cache_root, key, probe, threads, batch=4)

    with reporter.task("features", len(jobs), "images") as advance:
        features, failures, stats = extract(jobs, cache, make_engine, size, options.model.resize, threads, on_image=advance)
    if failures:
        reporter.warn(f"{len(failures)} image(s) could not be decoded and were skipped:")
        for path, reason in list(failures.items())[:MAX_LISTED]:
            reporter.info(f"  skipped {path}: {reason}")
    work.dataset = work.dataset.without(failures)
    for note in stats.notes:
        reporter.warn(note)
    work.timings["features_s"] = stats.seconds
    rate = f", {stats.views_per_s:.0f} views/s" if stats.views_per_s else ""
    reporter.info(f"features: {stats.views_computed} computed, {stats.views_cached} cached, engine {stats.engine or 'cache'}{rate}")
    return features, stats


def _arrays(samples: tuple[Sample, ...], features: dict[tuple[str, str], np.ndarray], clean_only: bool) -> Arrays:
    by_digest: dict[str, list[tuple[str, np.ndarray]]] = {}
    for (digest, view), vec in sorted(features.items()):
        by_digest.setdefault(digest, []).append((view, vec))
    rows, ys, groups, clean = [], [], [], []
    for i, sample in enumerate(samples):
        for view, vec in by_digest.get(sample.digest, ()):
            if clean_only and view != CLEAN_VIEW:
                continue
            rows.append(vec)
            ys.append(sample.label)
            groups.append(i)
            clean.append(view == CLEAN_VIEW)
    dim = next((v.shape[-1] for v in features.values()), 0)
    x = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), dtype=np.float32)
    return Arrays(x, np.array(ys, dtype=np.int64), np.array(groups, dtype=np.int64), np.array(clean, dtype=bool))


# -- head ------------------------------------------------------------------------------


def choose_strategy(mode: Distribute) -> Any:
    """MirroredStrategy when asked, or (auto) when more than one GPU/TPU is visible."""
    tf = require_tensorflow()
    accelerators = tf.config.list_logical_devices("GPU") + tf.config.list_logical_devices("TPU")
    if mode is Distribute.MIRRORED or (mode is Distribute.AUTO and len(accelerators) > 1):
        devices = [d.name for d in accelerators] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


def class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    """n / (classes * count): each class weighs the same in the loss in total."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    return {i: float(len(y) / (num_classes * c)) if c else 1.0 for i, c in enumerate(counts)}


def _compile_head(options: TrainOptions, dim: int, num_classes: int, replicas: int = 1) -> Any:
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

    Prebuilt and cached, an epoch over it costs a few ms of overhead instead of the
    ~0.3 s Keras spends re-wrapping NumPy arrays every epoch on this machine.
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


def fit_head(options: TrainOptions, arrays: dict[str, Arrays], num_classes: int, strategy: Any, work: _Work, reporter: Reporter) -> tuple[Any, dict[str, Any]]:
    """Fit dropout + dense softmax on cached features; early stopping restores the best epoch."""
    keras = require_keras()
    hyper = options.hyper
    train_a, val_a = arrays["train"], arrays["val"]
    keras.utils.set_random_seed(options.seed)
    with strategy.scope():
        head = _compile_head(options, train_a.x.shape[1], num_classes, int(strategy.num_replicas_in_sync))
    callbacks: list[Any] = []
    validation = None
    if len(val_a.y):
        validation = head_dataset(val_a.x, val_a.y, num_classes, 1024, options.seed)
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=hyper.patience, restore_best_weights=True))
    weights = class_weights(train_a.y, num_classes) if hyper.class_weights else None
    data = head_dataset(train_a.x, train_a.y, num_classes, hyper.batch_size, options.seed, weights, shuffle=True)
    with reporter.task("head", hyper.epochs, "epochs") as advance:
        history = head.fit(data, epochs=hyper.epochs, validation_data=validation, callbacks=callbacks + [keras_progress(advance)], shuffle=False, verbose=0)
    rows = _history_rows("head", history.history)
    work.history.extend(rows)
    best = _best_epoch(rows) if validation else len(rows)
    info = {"epochs_run": len(rows), "best_epoch": best, "stopped_early": len(rows) < hyper.epochs, "train_rows": int(len(train_a.y))}
    return head, info


def _history_rows(stage: str, history: dict[str, list[float]]) -> list[dict[str, Any]]:
    n = len(history.get("loss", []))
    return [{"stage": stage, "epoch": i + 1, **{k: float(v[i]) for k, v in history.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")}} for i in range(n)]


def _best_epoch(rows: list[dict[str, Any]]) -> int:
    losses = [r.get("val_loss", np.inf) for r in rows]
    return int(np.argmin(losses)) + 1 if losses else 0


def kfold_estimate(options: TrainOptions, train_a: Arrays, num_classes: int, epochs: int, folds: int) -> dict[str, Any]:
    """Stratified k-fold accuracy of the head (views of one image never straddle folds)."""
    keras = require_keras()
    images = np.unique(train_a.groups)
    labels = np.array([train_a.y[train_a.groups == g][0] for g in images])
    rng = np.random.default_rng(options.seed)
    fold_of = np.empty(len(images), dtype=np.int64)
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold_of[members] = np.arange(len(members)) % folds
    correct = 0
    total = 0
    for k in range(folds):
        held = images[fold_of == k]
        test_rows = np.isin(train_a.groups, held) & train_a.clean
        fit_rows = ~np.isin(train_a.groups, held)
        keras.utils.set_random_seed(options.seed + k)
        head = _compile_head(options, train_a.x.shape[1], num_classes)
        weights = class_weights(train_a.y[fit_rows], num_classes) if options.hyper.class_weights else None
        data = head_dataset(train_a.x[fit_rows], train_a.y[fit_rows], num_classes, options.hyper.batch_size, options.seed + k, weights, shuffle=True)
        head.fit(data, epochs=epochs, shuffle=False, verbose=0)  # the dataset shuffles itself
        pred = np.argmax(head.predict(train_a.x[test_rows], verbose=0), axis=1)
        correct += int(np.sum(pred == train_a.y[test_rows]))
        total += int(test_rows.sum())
    return {"method": f"stratified {folds}-fold cross-validation of the head", "folds": folds, "images": total, "accuracy": round(correct / total, 4) if total else None}


# -- fine-tuning -----------------------------------------------------------------------


def fine_tune(options: TrainOptions, classifier: Any, work: _Work, metrics: dict[str, Any], strategy: Any, reporter: Reporter) -> dict[str, Any]:
    """Unfreeze the top layers, train at a low rate, keep it only if val accuracy improves."""
    keras = require_keras()
    hyper = options.hyper
    labels = work.dataset.labels
    size = (options.model.image_size,) * 2
    if work.plan.mode != "val":
        return {"ran": False, "reason": "no validation images to judge fine-tuning by"}
    decoded = {}
    for split in ("train", "val", "test"):
        samples = work.dataset.splits[split]
        images, kept = decode_batch([str(s.path) for s in samples], size, options.model.resize, options.runtime.threads)
        decoded[split] = (images, np.array([samples[i].label for i in kept], dtype=np.int64))
    before = metrics["val"]["accuracy"]
    saved = classifier.get_weights()
    with strategy.scope():
        unfrozen = model_lib.unfreeze_top(classifier, hyper.fine_tune_layers)
        classifier.compile(
            optimizer=keras.optimizers.Adam(hyper.fine_tune_learning_rate),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=hyper.label_smoothing),
            metrics=["accuracy"],
        )
    (x_tr, y_tr), (x_val, y_val) = decoded["train"], decoded["val"]
    weights = class_weights(y_tr, len(labels)) if hyper.class_weights else None
    with reporter.task("fine-tune", hyper.fine_tune_epochs, "epochs") as advance:
        history = classifier.fit(
            x_tr.astype(np.float32), keras.utils.to_categorical(y_tr, len(labels)),
            batch_size=hyper.batch_size, epochs=hyper.fine_tune_epochs, shuffle=True, class_weight=weights,
            validation_data=(x_val.astype(np.float32), keras.utils.to_categorical(y_val, len(labels))),
            callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True), keras_progress(advance)],
            verbose=0,
        )
    work.history.extend(_history_rows("fine_tune", history.history))
    after = classification_metrics(y_val, predict_images(classifier, x_val), labels)
    helped = after["accuracy"] is not None and before is not None and after["accuracy"] > before
    if helped:
        metrics["val"] = after
        x_te, y_te = decoded["test"]
        metrics["test"] = classification_metrics(y_te, predict_images(classifier, x_te), labels) if len(y_te) else None
    else:
        classifier.set_weights(saved)
    model_lib.unfreeze_top(classifier, 0)
    classifier.get_layer(model_lib.BACKBONE_NAME).trainable = False
    verdict = "kept" if helped else "discarded (no val improvement)"
    reporter.info(f"fine-tune of {unfrozen} layers: val accuracy {before} -> {after['accuracy']}, {verdict}")
    return {"ran": True, "layers_unfrozen": unfrozen, "val_accuracy_before": before, "val_accuracy_after": after["accuracy"], "helped": helped, "kept": helped}


# -- the run directory -----------------------------------------------------------------


def run_name(options: TrainOptions) -> str:
    """The run's name: --name, else the data folder's name, filesystem-safe."""
    raw = options.name or Path(options.data.data_dir).expanduser().resolve().name or "run"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.") or "run"


def write_run(
    options: TrainOptions, work: _Work, classifier: Any, weights: str, metrics: dict[str, Any], reporter: Reporter, start: float
) -> tuple[Path, dict[str, Any]]:
    """Write everything under a temporary name, then rename: no half run looks complete."""
    name = run_name(options)
    now = datetime.now(timezone.utc)
    out_dir = Path(options.out_dir).expanduser().resolve()
    final = _unique(out_dir / f"{name}-{now.astimezone().strftime('%Y%m%d-%H%M%S')}")
    tmp = out_dir / f".{final.name}.partial"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale(out_dir, ".*.partial")  # left by runs that were killed while writing
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        summary = _write_files(tmp, final, options, work, classifier, weights, metrics, reporter, name, now)
        summary["wall_s"] = round(time.perf_counter() - start, 2)  # seconds, everything but the rename
        write_json(tmp / "summary.json", summary)
        os.replace(tmp, final)
    except OSError as exc:  # disk full, read-only or unwritable --out: a message, not a traceback
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"Cannot write the run to {final}: {exc.strerror or exc}; free some disk space or choose another --out") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, summary


def _unique(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _write_files(tmp: Path, final: Path, options: TrainOptions, work: _Work, classifier: Any, weights: str, metrics: dict[str, Any], reporter: Reporter, name: str, now: datetime) -> dict[str, Any]:
    dataset = work.dataset
    size = options.model.image_size
    classifier.save(tmp / "model.keras")
    write_atomic(tmp / "labels.txt", "\n".join(dataset.labels) + "\n")
    run = {
        "tledge_version": __version__,
        "name": name,
        "data_dir": str(dataset.root),
        "labels": list(dataset.labels),
        "image_size": [size, size],
        "resize": options.model.resize.value,
        "backbone": {"name": options.model.backbone.value, "alpha": options.model.alpha, "weights": weights},
        "options": options.to_json(),
        "created_utc": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seed": options.seed,
    }
    write_json(tmp / "run.json", run)
    write_json(tmp / "splits.json", {s: [[str(x.path), x.label] for x in dataset.splits[s]] for s in ("train", "val", "test")})
    report = dataset.report()
    report["evaluation"] = {"mode": work.plan.mode, "reason": work.plan.reason}
    report["warnings"] = list(dict.fromkeys(report["warnings"] + reporter.warnings))
    write_json(tmp / "data_report.json", report)
    write_json(tmp / "metrics.json", metrics)
    write_history_csv(tmp / "history.csv", work.history)
    plot_history(work.history, tmp / "learning_curves.png")
    for split in ("val", "test"):
        if metrics.get(split):
            plot_confusion(metrics[split]["confusion_matrix"], dataset.labels, tmp / f"confusion_{split}.png", f"{name}: {split} confusion matrix")
    summary = {
        "run_dir": str(final),
        "name": name,
        "labels": list(dataset.labels),
        "backbone": run["backbone"],
        "image_size": size,
        "val_accuracy": (metrics.get("val") or {}).get("accuracy"),
        "test_accuracy": (metrics.get("test") or {}).get("accuracy"),
        "evaluation": work.plan.mode,
        "val_estimate": (metrics.get("val_estimate") or {}).get("accuracy"),
        "images": {s: len(v) for s, v in dataset.splits.items()},
        "skipped": len(dataset.skipped),
        "head_epochs": metrics["head"]["epochs_run"],
        "fine_tune": metrics.get("fine_tune"),
        "features": {k: metrics["features"][k] for k in ("engine", "views_computed", "views_cached", "views_per_s", "seconds", "tflite_vs_keras_max_abs_diff")},
        "warnings": report["warnings"],
    }
    return summary
