"""What a training run needs of the feature pass: which views each image gets, the pass
with its progress and warnings, and the feature rows of each split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from trainer import model as model_lib
from trainer.config import TrainOptions
from trainer.dataset import Dataset, Sample
from trainer.features.cache import FeatureCache, options_key
from trainer.features.decoder import EarlyDecoder, Job
from trainer.features.engine_choice import EngineChoice, choose_engine
from trainer.features.extract import PassStats, extract
from trainer.features.prepared import PreparedBackbone
from trainer.features.views import CLEAN_VIEW, view_names
from trainer.features.worker import FeatureWorker, WorkerFailed, WorkerSpec
from trainer.progress import Reporter

#: Skipped files named one by one on the console (all of them go to data_report.json).
MAX_LISTED = 20

Features = dict[tuple[str, str], np.ndarray]  # (file digest, view) -> feature vector
T = TypeVar("T")


@dataclass(frozen=True)
class FeatureRows:
    """Feature rows of one split; `groups` ties augmented rows to their image."""

    x: np.ndarray  # (rows, dim) float32
    y: np.ndarray  # (rows,) class index
    groups: np.ndarray  # (rows,) image index within the split
    clean: np.ndarray  # (rows,) bool: the row is the image's clean view


#: Images per interpreter call of the TFLite feature engine.
ENGINE_BATCH = 4


def feature_pass(
    options: TrainOptions, dataset: Dataset, augment_val: bool, classifier: Any, digest: str, threads: int, reporter: Reporter,
    early: EarlyDecoder | None = None, engine: EngineChoice | None = None,
) -> tuple[Features, PassStats, Dataset]:
    """Features of every image (augmented views for those that may train), and the
    dataset without the images that could not be decoded. `augment_val`: val images will
    join train (no per-class validation), so they get augmented views too. `early`: the
    decoding of these jobs, started before the backbone existed (`early_decoder`).
    `engine`: an engine ready to run (trainer.features.prepared; `classifier` may then be
    None), else one is chosen for the Keras `classifier`'s feature model."""
    size = options.model.image_size
    key = options_key(options.model, digest)
    cache_root = options.runtime.cache_root
    cache = FeatureCache(options.runtime.cache, cache_root, key)
    jobs = view_jobs(dataset, augment_val, options.hyper.augment_views, options.seed)

    def make_engine(probe: np.ndarray) -> EngineChoice:
        if engine is not None:
            return engine
        features_model = model_lib.feature_model(classifier)
        return choose_engine(features_model, size, options.runtime.engine, cache_root, key, probe, threads, batch=ENGINE_BATCH)

    with reporter.task("features", len(jobs), "images") as advance:
        features, failures, stats = extract(jobs, cache, make_engine, size, options.model.resize, threads, on_image=advance, early=early)
    report_pass(reporter, "features", failures, stats)
    return features, stats, dataset.without(failures)


def worker_feature_pass(
    options: TrainOptions, dataset: Dataset, augment_val: bool, prepared: PreparedBackbone, threads: int, reporter: Reporter, meanwhile: Callable[[], T]
) -> tuple[Features, PassStats, Dataset, T]:
    """`feature_pass` on a prepared backbone in a process of its own (trainer.features.worker),
    while this process runs `meanwhile()` (TensorFlow's import and the Keras build); returns
    what both gave. A worker that does not finish is reported, and the pass runs here."""
    size = options.model.image_size
    key = options_key(options.model, prepared.digest)
    jobs = view_jobs(dataset, augment_val, options.hyper.augment_views, options.seed)
    spec = WorkerSpec(tuple(jobs), size, options.model.resize, options.runtime.cache_root, key, prepared.tflite,
                      threads, ENGINE_BATCH, prepared.engine.max_abs_diff, dict(prepared.engine.measured))
    with reporter.task("features", len(jobs), "images") as advance:
        worker = FeatureWorker(spec, advance)
        try:
            made = meanwhile()
        except BaseException:
            worker.cancel()
            raise
        try:
            features, failures, stats = worker.result()
        except WorkerFailed as why:
            failed = str(why)
        else:
            failed = None
    if failed is not None:
        reporter.warn(f"the feature worker did not finish ({failed}); computing the features in this process")
        features, stats, kept = feature_pass(options, dataset, augment_val, None, prepared.digest, threads, reporter, engine=prepared.engine)
        return features, stats, kept, made
    stats.in_worker = True
    report_pass(reporter, "features", failures, stats)
    return features, stats, dataset.without(failures), made


def early_decoder(options: TrainOptions, dataset: Dataset, augment_val: bool) -> EarlyDecoder:
    """Start decoding the images of `feature_pass` now, while TensorFlow imports (the pass
    needs the backbone to know which features are cached); stop it when the import is
    done, close it after the pass."""
    jobs = view_jobs(dataset, augment_val, options.hyper.augment_views, options.seed)
    return EarlyDecoder(jobs, options.model.image_size, options.model.resize)


def view_jobs(dataset: Dataset, augment_val: bool, augment_views: int, seed: int) -> list[Job]:
    """One job per image: the augmented views for the images that may train (train, and val
    when `augment_val`), the clean view alone for the others."""
    train_views = view_names(augment_views, seed)
    augmented = dataset.splits["train"] + (dataset.splits["val"] if augment_val else ())
    aug_paths = {s.path for s in augmented}
    return [Job(s, train_views if s.path in aug_paths else (CLEAN_VIEW,)) for s in dataset.all_samples()]


def report_pass(reporter: Reporter, what: str, failures: dict[Path, str], stats: PassStats) -> None:
    """Tell the console what a pass over the images (`what`: features, activations) did:
    the files it skipped (the first MAX_LISTED by name), its notes, and its counts."""
    if failures:
        reporter.warn(f"{len(failures)} image(s) could not be decoded and were skipped:")
        for path, reason in list(failures.items())[:MAX_LISTED]:
            reporter.info(f"  skipped {path}: {reason}")
    for note in stats.notes:
        reporter.warn(note)
    rate = f", {stats.views_per_s:.0f} views/s" if stats.views_per_s else ""
    reporter.info(f"{what}: {stats.views_computed} computed, {stats.views_cached} cached, engine {stats.engine or 'cache'}{rate}")


def feature_rows(samples: tuple[Sample, ...], features: Features, clean_only: bool) -> FeatureRows:
    """The rows of `samples` (all their views, or only the clean one) as arrays."""
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
    return FeatureRows(x, np.array(ys, dtype=np.int64), np.array(groups, dtype=np.int64), np.array(clean, dtype=bool))
