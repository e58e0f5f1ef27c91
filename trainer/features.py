"""The frozen backbone's features, computed once and cached.

Training only the head needs each image's pooled backbone features, not the image: they
are computed once per image (and per augmented view) and cached on disk, keyed by the
backbone's weights, the input size, the resize policy and each file's content. A head
epoch then costs milliseconds.

The feature pass is the cost that remains. The fastest way to run the frozen backbone
on a CPU is a float32 .tflite copy of it on ai-edge-litert (about 4x Keras' `predict`
here); `FeatureEngine.AUTO` uses it after checking on real images that its features
match Keras', and falls back to a `tf.function` over the Keras model otherwise. Images
are decoded and resized by a thread pool while the interpreter runs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.errors import ImageError
from edge.images import load_rgb
from edge.preprocess import ResizePolicy, resize_rgb
from edge.runtime import make_interpreter
from trainer.config import CacheMode, FeatureEngine
from trainer.dataset import Sample
from trainer.deps import require_tensorflow

#: Bumped when decoding, resizing or augmentation change, so old cached features are not reused.
CACHE_VERSION = "1"
#: TFLite may differ from Keras by float round-off; beyond this (relative to the largest
#: feature, at least 1.0) the .tflite copy is not trusted.
TOLERANCE = 1e-3
CLEAN_VIEW = "clean"


# -- augmentation ----------------------------------------------------------------------


def view_names(augment_views: int, seed: int) -> tuple[str, ...]:
    """The views of a training image: the clean one plus `augment_views` augmented ones."""
    return (CLEAN_VIEW,) + tuple(f"aug{CACHE_VERSION}-s{seed}-{i}" for i in range(1, augment_views + 1))


def augment(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random flip, rotation (±15°), zoom (0.9-1.2x), brightness and contrast change."""
    h, w = rgb.shape[:2]
    if rng.random() < 0.5:
        rgb = rgb[:, ::-1]
    angle = rng.uniform(-15.0, 15.0)  # degrees
    zoom = rng.uniform(0.9, 1.2)
    matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, zoom)
    out = cv2.warpAffine(np.ascontiguousarray(rgb), matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    contrast = rng.uniform(0.8, 1.2)
    brightness = rng.uniform(-0.1, 0.1) * 255.0  # pixels
    mean = out.mean(dtype=np.float32)
    adjusted = (out.astype(np.float32) - mean) * contrast + mean + brightness
    return np.clip(adjusted, 0, 255).astype(np.uint8)


def render_views(rgb: np.ndarray, size: int, policy: ResizePolicy, views: Sequence[str], digest: str) -> list[np.ndarray]:
    """The model-size image of each named view; augmentation is seeded by file and view."""
    base = resize_rgb(rgb, (size, size), policy)
    out = []
    for view in views:
        if view == CLEAN_VIEW:
            out.append(base)
        else:
            seed = int.from_bytes(hashlib.sha256(f"{digest}:{view}".encode()).digest()[:8], "little")
            out.append(augment(base, np.random.default_rng(seed)))
    return out


# -- the cache -------------------------------------------------------------------------


class FeatureCache:
    """Feature vectors by (file digest, view): on disk under `root`, or in memory."""

    def __init__(self, mode: CacheMode, root: Path, model_key: str) -> None:
        self.mode = CacheMode(mode)
        self.folder = root / "features" / model_key
        self._memory: dict[tuple[str, str], np.ndarray] = {}
        self.problem: str | None = None  # set when the disk cache had to be abandoned

    def _path(self, digest: str, view: str) -> Path:
        return self.folder / digest[:2] / f"{digest}-{view}.npy"

    def get(self, digest: str, view: str) -> np.ndarray | None:
        if self.mode is CacheMode.MEMORY:
            return self._memory.get((digest, view))
        path = self._path(digest, view)
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):  # missing or damaged: recompute
            return None

    def put(self, digest: str, view: str, vector: np.ndarray) -> None:
        if self.mode is CacheMode.MEMORY:
            self._memory[(digest, view)] = vector
            return
        path = self._path(digest, view)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        except OSError as exc:  # read-only or full disk: keep going in memory
            self.mode = CacheMode.MEMORY
            self.problem = f"feature cache {self.folder} is not writable ({exc.strerror or exc}); kept features in memory. Set TLEDGE_CACHE to a writable folder"
            self._memory[(digest, view)] = vector
            return
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, vector, allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def model_key(backbone: str, alpha: float, size: int, resize: str, weights_digest: str) -> str:
    """The cache key of a feature extractor: everything that changes its features."""
    text = f"{backbone}|{alpha}|{size}|{resize}|{weights_digest}|v{CACHE_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# -- extractors ------------------------------------------------------------------------


class KerasExtractor:
    """A `tf.function` over the Keras feature model (faster than `predict` here)."""

    engine = FeatureEngine.KERAS

    def __init__(self, features_model: Any, size: int) -> None:
        tf = require_tensorflow()
        spec = tf.TensorSpec([None, size, size, 3], tf.float32)
        self._fn = tf.function(lambda x: features_model(x, training=False), input_signature=[spec])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._fn(batch).numpy()


class TFLiteExtractor:
    """A float32 .tflite copy of the feature model on ai-edge-litert, fixed batch size."""

    engine = FeatureEngine.TFLITE

    def __init__(self, model_bytes: bytes, size: int, batch: int, threads: int) -> None:
        self.batch = batch
        self.interpreter, _ = make_interpreter(model_bytes, threads=threads)
        index = self.interpreter.get_input_details()[0]["index"]
        self.interpreter.resize_tensor_input(index, [batch, size, size, 3])
        self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()[0]["index"]
        self._out = self.interpreter.get_output_details()[0]["index"]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.concatenate([self._run(images[i : i + self.batch]) for i in range(0, len(images), self.batch)])

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        n = chunk.shape[0]
        if n < self.batch:  # pad the last chunk; the interpreter's shape is fixed
            pad = np.zeros((self.batch - n,) + chunk.shape[1:], dtype=np.float32)
            chunk = np.concatenate([chunk, pad])
        self.interpreter.set_tensor(self._in, np.ascontiguousarray(chunk, dtype=np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out)[:n].copy()


def convert_to_tflite(features_model: Any, size: int) -> bytes:
    """Convert the Keras feature model to a float32 .tflite (raw-pixel input)."""
    tf = require_tensorflow()

    class _Holder(tf.Module):  # tracks the variables so the converter freezes them
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.variables_ = [w.value for w in model.weights]

    fn = tf.function(lambda x: features_model(x, training=False), input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], _Holder(features_model))
    return converter.convert()


def cached_tflite(features_model: Any, size: int, cache_root: Path, key: str) -> tuple[bytes, float]:
    """The converted backbone from the cache, else converted now and cached. (bytes, seconds)."""
    path = cache_root / "backbones" / f"{key}.tflite"
    if path.is_file():
        return path.read_bytes(), 0.0
    start = time.perf_counter()
    data = convert_to_tflite(features_model, size)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
    return data, seconds


def compare(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, bool]:
    """(max abs difference, within tolerance). Non-finite values never pass."""
    if not np.all(np.isfinite(candidate)):
        return float("inf"), False
    diff = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    return diff, diff <= TOLERANCE * max(1.0, float(np.max(np.abs(reference), initial=0.0)))


@dataclass
class EngineChoice:
    """Which engine computes the features, and the evidence for choosing it."""

    extractor: Callable[[np.ndarray], np.ndarray]
    engine: FeatureEngine
    max_abs_diff: float | None = None  # TFLite vs Keras on real images
    convert_s: float = 0.0
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


# -- the feature pass ------------------------------------------------------------------


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
        }


@dataclass(frozen=True)
class Job:
    """One image and the views of it that are needed."""

    sample: Sample
    views: tuple[str, ...]


EngineFactory = Callable[[np.ndarray], EngineChoice]


def _decode(job: Job, size: int, policy: ResizePolicy) -> list[np.ndarray] | str:
    try:
        return render_views(load_rgb(job.sample.path), size, policy, job.views, job.sample.digest)
    except ImageError as exc:
        return str(exc).split(": ", 1)[-1]


def _decoded(jobs: Sequence[Job], size: int, policy: ResizePolicy, threads: int) -> Iterator[tuple[Job, list[np.ndarray] | str]]:
    """Decode in a thread pool, a bounded number ahead, in order."""
    ahead = max(8, threads * 8)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: list[tuple[Job, Future[Any]]] = []
        for job in jobs:
            pending.append((job, pool.submit(_decode, job, size, policy)))
            if len(pending) >= ahead:
                first, fut = pending.pop(0)
                yield first, fut.result()
        for job, fut in pending:
            yield job, fut.result()


def extract(
    jobs: Sequence[Job],
    cache: FeatureCache,
    make_engine: EngineFactory,
    size: int,
    policy: ResizePolicy,
    threads: int,
    batch: int = 16,
    on_image: Callable[[int], None] | None = None,
) -> tuple[dict[tuple[str, str], np.ndarray], dict[Path, str], PassStats]:
    """Features of every (digest, view) in `jobs`, from the cache or computed.

    Returns (features, failures path -> reason, stats). The engine is only built (and
    the backbone only converted) when something is missing from the cache.
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
            engine = make_engine(batch_array[:4])
        vectors = engine.extractor(batch_array)
        for k, vec in zip(keys, vectors):
            out[k] = vec
            cache.put(k[0], k[1], vec)
        stats.views_computed += len(keys)
        images.clear()
        keys.clear()

    for job, result in _decoded(todo, size, policy, threads):
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
        if engine.note:
            stats.notes.append(engine.note)
    return out, failures, stats

