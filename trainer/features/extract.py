"""The feature pass: every (image, view) a run needs, from the cache or computed in
batches by the chosen engine; images that cannot be decoded are returned by name."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.preprocess import ResizePolicy
from trainer.features.cache import FeatureCache
from trainer.features.decoder import EarlyDecoder, Job, decoded
from trainer.features.engine_choice import EngineChoice


@dataclass
class PassStats:
    """What the feature pass did (reported in metrics.json and the summary)."""

    images: int = 0  # images decoded
    views_computed: int = 0
    views_cached: int = 0
    seconds: float = 0.0
    engine: str | None = None
    max_abs_diff: float | None = None
    convert_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    engine_measurement: dict[str, Any] = field(default_factory=dict)  # ms per image per engine, cached or not
    in_worker: bool = False  # computed by a process of its own (trainer.features.worker)

    @property
    def views_per_s(self) -> float | None:
        return self.views_computed / self.seconds if self.seconds > 0 and self.views_computed else None

    def to_json(self) -> dict[str, Any]:
        return {
            "images_decoded": self.images,
            "views_computed": self.views_computed,
            "views_cached": self.views_cached,
            "seconds": round(self.seconds, 3),
            "views_per_s": round(self.views_per_s, 1) if self.views_per_s else None,
            "engine": self.engine,
            "tflite_vs_keras_max_abs_diff": self.max_abs_diff,
            "convert_s": round(self.convert_s, 2),
            "notes": self.notes,
            "engine_measurement": self.engine_measurement,
            "in_worker": self.in_worker,
        }


EngineFactory = Callable[[np.ndarray], EngineChoice]


def extract(
    jobs: Sequence[Job],
    cache: FeatureCache,
    make_engine: EngineFactory,
    size: int,
    policy: ResizePolicy,
    threads: int,
    batch: int = 16,
    on_image: Callable[[int], None] | None = None,
    early: EarlyDecoder | None = None,
) -> tuple[dict[tuple[str, str], np.ndarray], dict[Path, str], PassStats]:
    """Features of every (digest, view) in `jobs`, from the cache or computed.

    Returns (features, failures path -> reason, stats). The engine is only built (and
    the backbone only converted) when something is missing from the cache. `early`:
    images already being decoded for these jobs (trainer.features.decoder).
    """
    stats = PassStats()
    start = time.perf_counter()
    out: dict[tuple[str, str], np.ndarray] = {}
    todo: list[Job] = []
    for job in jobs:
        missing = []
        for view in job.views:
            hit = cache.get(job.sample.digest, view)
            if hit is None:
                missing.append(view)
            else:
                out[(job.sample.digest, view)] = hit
        stats.views_cached += len(job.views) - len(missing)
        if missing:
            todo.append(Job(job.sample, tuple(missing)))
        elif on_image:
            on_image(1)
    failures: dict[Path, str] = {}
    engine: EngineChoice | None = None
    images: list[np.ndarray] = []
    keys: list[tuple[str, str]] = []

    def flush() -> None:
        nonlocal engine
        batch_array = np.stack(images).astype(np.float32)
        if engine is None:  # built lazily: nothing to convert when all is cached
            engine = make_engine(batch_array)  # the first batch: checks and times the engines
        vectors = engine.extractor(batch_array)
        for k, vec in zip(keys, vectors):
            out[k] = vec
            cache.put(k[0], k[1], vec)
        stats.views_computed += len(keys)
        images.clear()
        keys.clear()

    for job, result in decoded(todo, size, policy, threads, early):
        if isinstance(result, str):
            failures[job.sample.path] = result
        else:
            stats.images += 1
            images.extend(result)
            keys.extend((job.sample.digest, v) for v in job.views)
            if len(images) >= batch:
                flush()
        if on_image:
            on_image(1)
    if images:
        flush()
    stats.seconds = time.perf_counter() - start
    if cache.problem:
        stats.notes.append(cache.problem)
    if engine is not None:
        stats.engine, stats.max_abs_diff, stats.convert_s = engine.engine.value, engine.max_abs_diff, engine.convert_s
        stats.engine_measurement = dict(engine.measured)
        if engine.note:
            stats.notes.append(engine.note)
    return out, failures, stats

