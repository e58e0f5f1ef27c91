"""Which extractor computes the features, with the evidence for the choice.

`FeatureEngine.AUTO` measures both on this machine, on the first batch of real images:
the TFLite copy is eligible when its features match Keras', and the faster of the two
(per image, after a warm-up call) is chosen. The choice is cached beside the converted
backbone (one file per thread count), so later runs build only the chosen engine and
skip tracing the other; deleting the cache folder measures again."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomic import write_bytes
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
    #: ms per image of each engine as measured on this machine, and whether this run
    #: measured them or read the cached choice
    measured: dict[str, Any] = field(default_factory=dict)


def _choice_path(cache_root: Path, key: str, threads: int) -> Path:
    return cache_root / "backbones" / f"{key}.engine-t{threads}.json"


def cached_engine_choice(cache_root: Path, key: str, threads: int) -> dict[str, Any] | None:
    """The engine choice recorded for this backbone and thread count, or None."""
    return _cached_choice(_choice_path(cache_root, key, threads))


def _cached_choice(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        FeatureEngine(record["engine"])
        return record
    except (OSError, ValueError, KeyError, TypeError):  # missing or damaged: measure again
        return None


def _ms_per_image(extractor: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> float:
    start = time.perf_counter()
    extractor(images)
    return (time.perf_counter() - start) * 1000.0 / len(images)


def choose_engine(
    features_model: Any, size: int, requested: FeatureEngine, cache_root: Path, key: str, probe: np.ndarray, threads: int, batch: int
) -> EngineChoice:
    """The engine `requested`, or for AUTO the faster of the two that agree (see the module)."""
    if requested is FeatureEngine.KERAS:
        return EngineChoice(KerasExtractor(features_model, size), FeatureEngine.KERAS)
    choice_path = _choice_path(cache_root, key, threads)
    cached = _cached_choice(choice_path) if requested is FeatureEngine.AUTO else None
    if cached is not None and cached["engine"] == FeatureEngine.KERAS.value:
        return EngineChoice(KerasExtractor(features_model, size), FeatureEngine.KERAS, cached.get("max_abs_diff"), measured={**cached, "cached": True})
    keras_extractor = KerasExtractor(features_model, size)  # not traced yet: cheap when unused
    try:
        data, convert_s = cached_tflite(features_model, size, cache_root, key, keras_extractor.function)
        tflite = TFLiteExtractor(data, size, batch, threads)
    except Exception as exc:  # the converter raises many types; Keras still works
        if requested is FeatureEngine.TFLITE:
            raise
        return EngineChoice(keras_extractor, FeatureEngine.KERAS, note=f"TFLite conversion failed ({type(exc).__name__}); used Keras")
    if cached is not None:
        return EngineChoice(tflite, FeatureEngine.TFLITE, cached.get("max_abs_diff"), convert_s, measured={**cached, "cached": True})
    check = probe[:4]
    diff, ok = compare(keras_extractor(check), tflite(check))  # also the warm-up call of each
    if requested is FeatureEngine.TFLITE:
        return EngineChoice(tflite, FeatureEngine.TFLITE, diff, convert_s)
    if not ok:
        note = f"TFLite features differ from Keras by {diff:.3g} (> tolerance); used Keras"
        return EngineChoice(keras_extractor, FeatureEngine.KERAS, diff, convert_s, note)
    speeds = {"keras_ms_per_image": round(_ms_per_image(keras_extractor, probe), 2), "tflite_ms_per_image": round(_ms_per_image(tflite, probe), 2)}
    engine = FeatureEngine.TFLITE if speeds["tflite_ms_per_image"] <= speeds["keras_ms_per_image"] else FeatureEngine.KERAS
    record = {"engine": engine.value, "max_abs_diff": diff, "threads": threads, "probe_images": int(len(probe)), **speeds,
              "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        write_bytes(choice_path, (json.dumps(record, indent=2) + "\n").encode(), durable=False)  # recomputable: no fsync
    except OSError:
        pass  # a read-only cache: measure again next time
    extractor = tflite if engine is FeatureEngine.TFLITE else keras_extractor
    return EngineChoice(extractor, engine, diff, convert_s, measured={**record, "cached": False})
