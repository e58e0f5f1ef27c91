"""`train(options) -> TrainResult`: the orchestration of a training run, and nothing else.

    scan ─> build model ─> feature pass (trainer.features), or with --fine-tune the
         activation pass at the cut (trainer.fine_tune) ─> evaluation plan
         ─> fit head (trainer.head) [─> k-fold estimate (trainer.kfold)]
         ─> [fine-tune the top blocks on the cache] ─> val + test metrics, once
         ─> run folder (trainer.run_dir)

The backbone is frozen, so its features are computed once per image (and per augmented
view) and the head (dropout + dense softmax) is fitted on the cached arrays, in NumPy.
The head's weights are then put into the full classifier (raw pixels in, softmax out),
which is saved. On a backbone converted by an earlier run (trainer.features.prepared)
whose classifier is cached, nothing is built: the features come from the converted
backbone and model.keras is that classifier with this head (trainer.keras_file), so
the run never imports TensorFlow. The optional second stage trains the top backbone
blocks on activations cached at a block boundary and is kept only when it lowers the
validation loss.

Model selection (early stopping, keep or discard) reads the validation split only; the
test split is evaluated once, at the end, on the final model. Every accuracy carries its
sample size and a 95 % Wilson interval (trainer.stats); when val or test hold fewer than
`trainer.stats.MIN_PER_CLASS` images of a class, the run says the estimate is weak and
its headline becomes a k-fold out-of-fold estimate.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from trainer import __version__
from trainer import model as model_lib
from trainer.config import TrainOptions
from trainer.dataset import Dataset, scan
from trainer.deps import check_installed, require_keras
from trainer.evaluate import classification_metrics
from trainer.evaluation_plan import EvalMode, EvalPlan, merge_val_into_train, plan_evaluation
from trainer.features.prepared import classifier_template, keep_classifier, prepared_backbone, record_digest
from trainer.features.training import ENGINE_BATCH, MAX_LISTED, FeatureRows, early_decoder, feature_pass, feature_rows, worker_feature_pass
from trainer.features.views import CLEAN_VIEW
from trainer.fine_tune import CutPass, cut_pass, run_stage, top_data
from trainer.fine_tune import evaluate_top
from trainer.head import DenseHead, fit_head
from trainer.keras_file import KerasFileError, write_with_head
from trainer.kfold import kfold_estimate
from trainer.progress import Reporter
from trainer.run_dir import PictureProcess, RunRecord, run_name, write_run
from trainer.stats import MIN_PER_CLASS, weak_splits


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
    #: val/test image path -> the pooled backbone features the run's float model answered
    #: from (the clean view); None after a kept fine-tuning stage changed the backbone.
    #: `tledge train --export` verifies the float side from these (trainer.export.float_side).
    verification_features: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)
    #: the Keras classifier saved in the run folder, still in memory (`tledge train --export`
    #: converts it without reading model.keras back); None when model.keras was written
    #: from the cached template (trainer.keras_file) and no Keras model was built
    model: Any = field(default=None, repr=False, compare=False)

    @property
    def val_accuracy(self) -> float | None:
        return (self.metrics.get("val") or {}).get("accuracy")

    @property
    def test_accuracy(self) -> float | None:
        return (self.metrics.get("test") or {}).get("accuracy")


def _scan(options: TrainOptions, threads: int, reporter: Reporter) -> Dataset:
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
    return dataset


def _build(options: TrainOptions, num_classes: int, timings: dict[str, float]) -> tuple[model_lib.BuiltBackbone, Any]:
    """The backbone (weights resolved) and the full classifier around it, under the run's
    seed; `timings["build_s"]` excludes the wait for TensorFlow's import."""
    keras = require_keras("tledge train")
    tick = time.perf_counter()
    keras.utils.set_random_seed(options.seed)
    backbone = model_lib.build_backbone(options.model)
    classifier = model_lib.build_classifier(backbone, options.model, num_classes)
    timings["build_s"] = time.perf_counter() - tick
    return backbone, classifier


def train(options: TrainOptions, reporter: Reporter | None = None) -> TrainResult:
    """Train a classifier as `options` say and write its run directory. Never mutates `options`."""
    # The process that draws the run's pictures starts now: matplotlib's import (most of
    # its second) then overlaps the features instead of following the head.
    with PictureProcess() as pictures:
        return _train(options, reporter or Reporter(quiet=options.runtime.quiet), pictures, use_prepared=True)


def _train(options: TrainOptions, reporter: Reporter, pictures: PictureProcess, use_prepared: bool) -> TrainResult:
    """`train`; `use_prepared`: the features may come from the cached TFLite backbone
    before the classifier is built (trainer.features.prepared)."""
    start = time.perf_counter()
    threads = options.runtime.threads or os.cpu_count() or 1
    timings: dict[str, float] = {}

    check_installed("tledge train")  # a missing training extra is the first thing to fix
    # TensorFlow is imported only once the scan is done and, on the prepared path, the
    # feature worker has started: a thread importing it meanwhile held the GIL and slowed
    # the scan from 0.1 s to 1.1-1.6 s, all of it before the worker could start.
    tick = time.perf_counter()
    dataset = _scan(options, threads, reporter)
    timings["scan_s"] = time.perf_counter() - tick

    augment_val = plan_evaluation(dataset).mode is not EvalMode.VAL  # val may join train: augment it too
    fine_tune = options.hyper.fine_tune.enabled and not augment_val  # fine-tuning needs val to select by
    cut: CutPass | None = None
    prepared = prepared_backbone(options, threads, ENGINE_BATCH) if use_prepared and not fine_tune else None
    template: Path | None = None
    classifier: Any = None
    if prepared is not None:  # the features in a process of their own, while this one builds the classifier
        template = classifier_template(options, prepared.digest)
        build = (lambda: None) if template is not None else (lambda: _build(options, len(dataset.labels), timings))
        features, stats, kept, built = worker_feature_pass(options, dataset, augment_val, prepared, threads, reporter, build)
        if built is None:  # model.keras will be written from the template: no TensorFlow in this run
            backbone = model_lib.BuiltBackbone(None, model_lib.weights_label(options.model), prepared.digest)
        else:
            backbone, classifier = built
            if backbone.digest != prepared.digest:  # the record is wrong: start again the ordinary way
                prepared.forget()
                reporter.warn("the cached backbone did not match the weights file; computing the features again")
                return _train(options, reporter, pictures, use_prepared=False)
        dataset = kept
    else:
        # The feature pass's images start decoding now, on one thread, while TensorFlow imports.
        with nullcontext() if fine_tune else early_decoder(options, dataset, augment_val) as early:
            require_keras("tledge train")
            if early is not None:
                early.stop()  # the backbone build needs the CPU now; the pass decodes the rest
            backbone, classifier = _build(options, len(dataset.labels), timings)
            record_digest(options, backbone.digest)
            if backbone.warning:
                reporter.warn(backbone.warning)
            if fine_tune:
                cut, dataset = cut_pass(options, dataset, augment_val, classifier, backbone.digest, threads, reporter)
                features, stats = cut.features(), cut.stats
            else:
                features, stats, dataset = feature_pass(options, dataset, augment_val, classifier, backbone.digest, threads, reporter, early)
    timings["features_s"] = stats.seconds
    plan = plan_evaluation(dataset)  # again: undecodable images may have emptied a class's val
    if plan.mode is not EvalMode.VAL:
        reporter.warn(plan.reason or "no validation images")
        dataset = merge_val_into_train(dataset)

    rows = {s: feature_rows(dataset.splits[s], features, clean_only=s != "train") for s in ("train", "val", "test")}
    tick = time.perf_counter()
    fitted = fit_head(options, rows, len(dataset.labels), reporter)
    timings["head_s"] = time.perf_counter() - tick
    if classifier is not None:
        model_lib.copy_head(fitted.head, classifier)
    history = list(fitted.history)

    metrics: dict[str, Any] = {"evaluation": {"mode": plan.mode.value, "reason": plan.reason}}
    weak = weak_splits(dataset.counts()) if plan.mode is EvalMode.VAL else {}
    if plan.mode is EvalMode.KFOLD:
        metrics["val_estimate"] = kfold_estimate(options, rows["train"], len(dataset.labels), fitted.info["epochs_run"], plan.folds)
    elif "val" in weak:
        pooled_rows = feature_rows(dataset.splits["train"] + dataset.splits["val"], features, clean_only=False)
        folds = min(5, min(c for c in _pooled_counts(dataset).values()))
        if folds >= 2:
            metrics["val_estimate"] = kfold_estimate(options, pooled_rows, len(dataset.labels), fitted.info["epochs_run"], folds)
    for split, smallest in weak.items():
        reporter.warn(
            f"{split} holds only {smallest} image(s) of its smallest class (fewer than {MIN_PER_CLASS} per class): "
            f"its accuracy is a weak estimate" + ("; the headline is the k-fold out-of-fold estimate over train+val" if split == "val" and "val_estimate" in metrics else "")
            + ". Add images for a firmer figure"
        )
    metrics["weak_estimate"] = {"splits": weak, "min_per_class": MIN_PER_CLASS}
    if options.hyper.fine_tune.enabled:
        tick = time.perf_counter()
        if cut is not None and plan.mode is EvalMode.VAL:
            tuned = run_stage(options, cut, dataset, reporter)
            history.extend(tuned.history)
            metrics["fine_tune"] = {**tuned.info, "cut_check": cut.check.to_json() if cut.check else None}
        else:
            metrics["fine_tune"] = {"ran": False, "reason": "no validation images to select the fine-tuned model by"}
            reporter.warn("fine-tuning skipped: no validation images to select the fine-tuned model by")
        timings["fine_tune_s"] = time.perf_counter() - tick
    # Everything is selected; the test split is evaluated once, here, on the final model.
    for split in ("val", "test"):
        metrics[split] = _final_metrics(dataset, split, fitted.head, rows[split], cut)
    metrics["head"] = fitted.info
    metrics["features"] = stats.to_json()
    metrics["distribute"] = fitted.distribute
    timings["before_write_s"] = time.perf_counter() - start
    metrics["timings"] = {k: round(v, 3) for k, v in timings.items()}
    record = run_record(options, dataset, plan, backbone.weights, metrics, history, reporter, _feature_cache(options, backbone.digest))
    if classifier is not None:
        run_dir, summary = write_run(options.out_dir, record, classifier.save, start, pictures)
        keep_classifier(options, backbone.digest, run_dir / "model.keras")
    else:
        assert template is not None  # nothing was built only because the template stands in for it
        run_dir, summary = write_run(options.out_dir, record, partial(_from_template, options, template, fitted.head, reporter), start, pictures)
    kept_fine_tune = bool((metrics.get("fine_tune") or {}).get("kept"))
    vectors = None if kept_fine_tune else _clean_features(dataset, features, ("val", "test"))
    return TrainResult(run_dir, dataset.labels, metrics, summary, float(summary["wall_s"]), backbone.weights, tuple(reporter.warnings), vectors, classifier)


def _from_template(options: TrainOptions, template: Path, head: DenseHead, reporter: Reporter, path: Path) -> None:
    """Write model.keras from the cached classifier `template` with `head`; a template that
    cannot be used is dropped, and the classifier is built and saved through Keras."""
    try:
        write_with_head(template, head, options.model.dropout, path)
        return
    except KerasFileError as why:
        template.unlink(missing_ok=True)
        reporter.warn(f"the cached classifier could not be used ({why}); saving the model through Keras")
    require_keras("tledge train")
    _, classifier = _build(options, len(head.bias), {})
    model_lib.copy_head(head, classifier)
    classifier.save(path)


def _feature_cache(options: TrainOptions, digest: str) -> dict[str, str] | None:
    """Where the feature pass cached the features of the saved model's backbone, for
    run.json (`tledge export` answers the float side from them); None when they are not
    on disk or a fine-tuning stage may change the backbone."""
    from trainer.config import CacheMode
    from trainer.features.cache import options_key

    if options.runtime.cache is not CacheMode.DISK or options.hyper.fine_tune.enabled:
        return None
    root = options.runtime.cache_root.expanduser().resolve()
    return {"root": str(root), "key": options_key(options.model, digest)}


def _clean_features(dataset: Dataset, features: dict[tuple[str, str], np.ndarray], splits: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Image path -> clean-view features of every image in `splits` that has them."""
    out = {}
    for split in splits:
        for sample in dataset.splits.get(split, ()):
            vector = features.get((sample.digest, CLEAN_VIEW))
            if vector is not None:
                out[str(sample.path)] = vector
    return out


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The one accuracy to quote: the k-fold out-of-fold estimate when there is one (no
    per-class val, or a weak val), else val; None when no estimate is possible."""
    estimate = metrics.get("val_estimate")
    if estimate and estimate.get("accuracy") is not None:
        return {"source": "kfold", "accuracy": estimate["accuracy"], "interval": estimate.get("interval"), "method": estimate.get("method")}
    val = metrics.get("val")
    if val and val.get("accuracy") is not None:
        return {"source": "val", "accuracy": val["accuracy"], "interval": val.get("accuracy_interval")}
    return {"source": "unavailable", "accuracy": None, "interval": None}


def _pooled_counts(dataset: Dataset) -> dict[str, int]:
    counts = dataset.counts()
    return {n: counts["train"][n] + counts["val"][n] for n in dataset.labels}


def _final_metrics(dataset: Dataset, split: str, head: DenseHead, rows: FeatureRows, cut: CutPass | None) -> dict[str, Any] | None:
    """Metrics of the final classifier on `split`: the top on cached activations when the
    classifier was cut (equal to running it end to end), else the head on features."""
    if cut is not None:
        data = top_data(dataset.splits[split], cut.activations, clean_only=True)
        if not len(data.y):
            return None
        probs, _ = evaluate_top(cut.halves.top, data, len(dataset.labels))
        return classification_metrics(data.y, probs, dataset.labels)
    return classification_metrics(rows.y, head.predict(rows.x), dataset.labels) if len(rows.y) else None


def run_record(
    options: TrainOptions, dataset: Dataset, plan: EvalPlan, weights: str, metrics: dict[str, Any], history: list[dict[str, Any]], reporter: Reporter,
    feature_cache: dict[str, str] | None = None,
) -> RunRecord:
    """What the run folder holds besides the model (see `trainer.run_dir`)."""
    name = run_name(options.name, options.data.data_dir)
    report = dataset.report()
    report["evaluation"] = {"mode": plan.mode.value, "reason": plan.reason}
    report["warnings"] = list(dict.fromkeys(report["warnings"] + reporter.warnings))
    backbone = {"name": options.model.backbone.value, "alpha": options.model.alpha, "weights": weights}
    summary = {
        "name": name,
        "labels": list(dataset.labels),
        "backbone": backbone,
        "image_size": options.model.image_size,
        "val_accuracy": (metrics.get("val") or {}).get("accuracy"),
        "test_accuracy": (metrics.get("test") or {}).get("accuracy"),
        "val_interval": (metrics.get("val") or {}).get("accuracy_interval"),
        "test_interval": (metrics.get("test") or {}).get("accuracy_interval"),
        "evaluation": plan.mode.value,
        "val_estimate": (metrics.get("val_estimate") or {}).get("accuracy"),
        "val_estimate_interval": (metrics.get("val_estimate") or {}).get("interval"),
        "headline": headline(metrics),
        "weak_estimate": metrics.get("weak_estimate"),
        "images": {s: len(v) for s, v in dataset.splits.items()},
        "skipped": len(dataset.skipped),
        "head_epochs": metrics["head"]["epochs_run"],
        "fine_tune": metrics.get("fine_tune"),
        "features": {k: metrics["features"][k] for k in ("engine", "views_computed", "views_cached", "views_per_s", "seconds", "tflite_vs_keras_max_abs_diff")},
        "warnings": report["warnings"],
    }
    return RunRecord(
        name=name, labels=dataset.labels, image_size=options.model.image_size, resize=options.model.resize, backbone=backbone,
        options=options.to_json(), seed=options.seed, created=datetime.now(timezone.utc), version=__version__, data_root=dataset.root,
        splits={s: [(x.path, x.label) for x in dataset.splits[s]] for s in ("train", "val", "test")},
        data_report=report, metrics=metrics, history=tuple(history), summary=summary, feature_cache=feature_cache,
    )
