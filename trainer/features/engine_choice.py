"""Which extractor computes the features: the TFLite copy when it matches Keras on real
images (or is asked for), else Keras; with the evidence for the choice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.config import FeatureEngine
from trainer.features.keras_engine import KerasExtractor
from trainer.features.tflite_engine import TFLiteExtractor, cached_tflite

#: TFLite may differ from Keras by float round-off; beyond this (relative to the largest
#: feature, at least 1.0) the .tflite copy is not trusted.
TOLERANCE = 1e-3


def compare(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, bool]:
    """(max abs difference, within tolerance). Non-finite values never pass."""
    if not np.all(np.isfinite(candidate)):
        return float("inf"), False
    diff = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    return diff, diff <= TOLERANCE * max(1.0, float(np.max(np.abs(reference), initial=0.0)))


@dataclass(frozen=True)
class EngineChoice:
    """Which engine computes the features, and the evidence for choosing it."""

    extractor: Callable[[np.ndarray], np.ndarray]
    engine: FeatureEngine
    max_abs_diff: float | None = None  # TFLite vs Keras on real images
    convert_s: float = 0.0  # seconds spent converting the backbone (0 when cached)
    note: str | None = None


def choose_engine(
    features_model: Any, size: int, requested: FeatureEngine, cache_root: Path, key: str, probe: np.ndarray, threads: int, batch: int
) -> EngineChoice:
    """The TFLite engine when it is requested or matches Keras on `probe`, else Keras."""
    keras_extractor = KerasExtractor(features_model, size)
    if requested is FeatureEngine.KERAS:
        return EngineChoice(keras_extractor, FeatureEngine.KERAS)
    try:
        data, convert_s = cached_tflite(features_model, size, cache_root, key)
        tflite = TFLiteExtractor(data, size, batch, threads)
    except Exception as exc:  # the converter raises many types; Keras still works
        if requested is FeatureEngine.TFLITE:
            raise
        return EngineChoice(keras_extractor, FeatureEngine.KERAS, note=f"TFLite conversion failed ({type(exc).__name__}); used Keras")
    diff, ok = compare(keras_extractor(probe), tflite(probe))
    if ok or requested is FeatureEngine.TFLITE:
        return EngineChoice(tflite, FeatureEngine.TFLITE, diff, convert_s)
    note = f"TFLite features differ from Keras by {diff:.3g} (> tolerance); used Keras"
    return EngineChoice(keras_extractor, FeatureEngine.KERAS, diff, convert_s, note)
