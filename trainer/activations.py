"""Activations at the cut, computed once per image (and augmented view) and cached.

The fine-tuning stage trains only the blocks above a cut (trainer.cut); the frozen bottom
is run once per image here, the way `trainer.features` runs the whole frozen backbone for
the head: the same engines (a float32 TFLite copy of the bottom, checked against Keras,
else Keras), the same decoding pool, the same per-file content keys. Activations are
stored as float16 (half the disk and memory; far below the noise of training), beside
the feature cache under `<cache>/activations/<key>/`.

Before anything is cached the stored (float16) activations are checked against the full
model: on real images, the top run on them must give the full classifier's pooled
features within `CUT_TOLERANCE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edge.errors import ModelError
from edge.preprocess import ResizePolicy
from trainer import cut as cut_lib
from trainer import model as model_lib
from trainer.config import CacheMode, FeatureEngine
from trainer.deps import require_tensorflow
from trainer.features import EngineChoice, FeatureCache, Job, PassStats, choose_engine, extract

#: Float16 storage and round-off in the top blocks: the top's pooled features on cached
#: activations must match the full model's within this, relative to the largest feature
#: (at least 1.0).
CUT_TOLERANCE = 1e-2
#: Stored dtype of cached activations.
STORED_DTYPE = np.float16


class ActivationCache(FeatureCache):
    """Activations at one cut by (file digest, view), stored as float16."""

    def __init__(self, mode: CacheMode, root: Path, key: str) -> None:
        super().__init__(mode, root, key)
        self.folder = root / "activations" / key

    def put(self, digest: str, view: str, vector: np.ndarray) -> None:
        super().put(digest, view, np.asarray(vector, dtype=STORED_DTYPE))


def cut_key(model_key: str, cut: cut_lib.Cut) -> str:
    """The cache key of one cut of one backbone (see `trainer.features.model_key`)."""
    return f"{model_key}-{cut.layer}"


@dataclass
class CutCheck:
    """How far the top on cached activations is from the full model (pooled features)."""

    max_abs_diff: float
    tolerance: float
    images: int

    def to_json(self) -> dict[str, Any]:
        return {"max_abs_diff": self.max_abs_diff, "tolerance": self.tolerance, "images": self.images}


def check_against_full(halves: cut_lib.Halves, classifier: Any, images: np.ndarray, extractor: Callable[[np.ndarray], np.ndarray]) -> CutCheck:
    """Compare top(float16(bottom(images))) with the full classifier's pooled features."""
    tf = require_tensorflow()
    full = model_lib.feature_model(classifier)
    pooled_top = cut_lib.pooled_features(halves)
    reference = full(tf.constant(images, dtype=tf.float32), training=False).numpy()
    stored = np.asarray(extractor(images), dtype=STORED_DTYPE).astype(np.float32)
    candidate = pooled_top(tf.constant(stored), training=False).numpy()
    if not np.all(np.isfinite(candidate)):
        diff = float("inf")
    else:
        diff = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    scale = max(1.0, float(np.max(np.abs(reference), initial=0.0)))
    return CutCheck(diff, CUT_TOLERANCE * scale, len(images))


def activation_pass(
    jobs: Sequence[Job],
    halves: cut_lib.Halves,
    classifier: Any,
    cache: ActivationCache,
    engine: FeatureEngine,
    cache_root: Path,
    key: str,
    size: int,
    policy: ResizePolicy,
    threads: int,
    on_image: Callable[[int], None] | None = None,
) -> tuple[dict[tuple[str, str], np.ndarray], dict[Path, str], PassStats, CutCheck | None]:
    """Activations at the cut for every (digest, view) in `jobs`, cached or computed.

    Returns (activations, failures path -> reason, stats, check). `check` is None when
    everything came from the cache (it was checked when it was computed). Raises
    `ModelError` when the cached activations would not reproduce the full model.
    """
    checks: list[CutCheck] = []

    def make_engine(probe: np.ndarray) -> EngineChoice:
        choice = choose_engine(halves.bottom, size, engine, cache_root, key, probe, threads, batch=4)
        check = check_against_full(halves, classifier, probe, choice.extractor)
        if check.max_abs_diff > check.tolerance:
            raise ModelError(
                f"activations cached at {halves.cut.layer} do not reproduce the full model "
                f"(pooled features differ by {check.max_abs_diff:.3g} > {check.tolerance:.3g}); "
                "re-run with --engine keras, or fine-tune without --fine-tune"
            )
        checks.append(check)
        return choice

    activations, failures, stats = extract(jobs, cache, make_engine, size, policy, threads, on_image=on_image)
    # Computed ones come back float32: train on exactly what a later run reads from the cache.
    activations = {k: np.asarray(a, dtype=STORED_DTYPE) for k, a in activations.items()}
    return activations, failures, stats, (checks[0] if checks else None)


def pooled(halves: cut_lib.Halves, x: np.ndarray, batch: int = 128) -> np.ndarray:
    """The head's input features computed from cached activations (frozen top)."""
    tf = require_tensorflow()
    model = cut_lib.pooled_features(halves)
    fn = tf.function(lambda t: model(tf.cast(t, tf.float32), training=False))
    outs = [fn(tf.constant(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
    if not outs:
        return np.zeros((0, int(model.output.shape[-1])), dtype=np.float32)
    return np.concatenate(outs).astype(np.float32)
