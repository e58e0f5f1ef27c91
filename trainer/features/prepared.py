"""A backbone whose features can be computed before TensorFlow is imported.

A run's feature pass needs the backbone's weights digest (the cache key) and, on the
TFLite engine, the converted backbone. Both come from the Keras backbone, whose build
waits for TensorFlow's import (seconds) and costs seconds more. After a first run they
are on disk: the converted backbone and the engine choice under `backbones/` of the
cache (trainer.features.tflite_engine, trainer.features.engine_choice), and, written
here, which digest a given weights file gives (`backbones/sources/`). A later run on
the same weights file (`--weights FILE`, `$TLEDGE_WEIGHTS`, or Keras' cached ImageNet
file) finds all three by hashing the file, computes its features on the edge runtime's
interpreter at once, and builds the Keras classifier meanwhile (trainer.train). The
digest of the Keras backbone built later is compared with the recorded one; a mismatch
drops the record and the run takes the ordinary path.

When a run on the same backbone key has saved its classifier before, a copy of that
model.keras is cached too (`keep_classifier`), and the run writes its own from it
(trainer.keras_file: another head, any number of classes and dropout) instead of
building the Keras classifier: with the head fitted in NumPy (trainer.head), such a run
never imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path

from edge.atomic import write_bytes
from edge.errors import TledgeError
from trainer import model as model_lib
from trainer.config import CacheMode, FeatureEngine, ModelOptions, TrainOptions, WeightsKind
from trainer.features.cache import options_key
from trainer.features.engine_choice import EngineChoice, cached_engine_choice
from trainer.features.tflite_engine import TFLiteExtractor, cached_tflite_path
from trainer.keras_file import keep_template, template_path


@dataclass(frozen=True)
class PreparedBackbone:
    """What the feature pass needs, found on disk without TensorFlow."""

    digest: str  # the Keras backbone's weights digest recorded for this weights file
    engine: EngineChoice  # the cached TFLite engine, ready to run
    source: Path  # the record that maps the weights file to `digest`
    tflite: Path  # the converted backbone the engine runs

    def forget(self) -> None:
        """Drop the record (its digest did not match the backbone built from the file)."""
        self.source.unlink(missing_ok=True)


def weights_file(options: ModelOptions) -> Path | None:
    """The file the backbone's weights load from, when known without building it: the
    --weights/$TLEDGE_WEIGHTS file, or Keras' cached ImageNet file; else None."""
    kind = options.weights.kind
    if kind is WeightsKind.FILE:
        path = options.weights.path
        return Path(path) if path is not None and Path(path).is_file() else None
    if kind is WeightsKind.IMAGENET:
        return model_lib.cached_imagenet_file(model_lib.check_options(options), options)
    return None  # random weights: a new digest for every seed


def _source_path(cache_root: Path, options: ModelOptions, weights: Path) -> Path:
    """The record for this weights file's content and everything else that shapes the
    built backbone (its kind, width, input size, and the Keras that builds it)."""
    content = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            content.update(block)
    keras_version = importlib.metadata.version("keras")  # no import: metadata only
    text = f"{options.backbone.value}|{options.alpha}|{options.image_size}|keras {keras_version}|{content.hexdigest()}"
    return cache_root / "backbones" / "sources" / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.json"


def record_digest(options: TrainOptions, digest: str) -> None:
    """Remember which digest the run's weights file gave (best effort: a cache that
    cannot be written only means the next run takes the ordinary path)."""
    weights = weights_file(options.model)
    if weights is None:
        return
    try:
        path = _source_path(options.runtime.cache_root, options.model, weights)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(path, (json.dumps({"digest": digest, "weights": str(weights)}) + "\n").encode(), durable=False)
    except OSError:
        pass


def prepared_backbone(options: TrainOptions, threads: int, batch: int) -> PreparedBackbone | None:
    """The backbone's digest and TFLite engine from the cache, or None when any part is
    missing, the engine asked for or cached is not TFLite, or the weights file is not known."""
    if options.runtime.engine is not FeatureEngine.AUTO:  # an engine asked for by name is checked anew
        return None
    if options.runtime.cache is not CacheMode.DISK:  # the worker hands the features over through the disk cache
        return None
    weights = weights_file(options.model)
    if weights is None:
        return None
    root = options.runtime.cache_root
    m = options.model
    try:
        source = _source_path(root, m, weights)
        digest = str(json.loads(source.read_text(encoding="utf-8"))["digest"])
    except (OSError, ValueError, KeyError, TypeError):  # not recorded yet, or damaged
        return None
    key = options_key(m, digest)
    choice = cached_engine_choice(root, key, threads)
    if choice is None or choice["engine"] != FeatureEngine.TFLITE.value:
        return None
    try:
        data = cached_tflite_path(root, key).read_bytes()  # read here too: a file the interpreter refuses is found now
        extractor = TFLiteExtractor(data, m.image_size, batch, threads)
    except (OSError, ValueError, RuntimeError, TledgeError):  # missing, or a file the interpreter refuses
        return None
    engine = EngineChoice(extractor, FeatureEngine.TFLITE, choice.get("max_abs_diff"), 0.0, measured={**choice, "cached": True})
    return PreparedBackbone(digest, engine, source, cached_tflite_path(root, key))


def _template(options: TrainOptions, digest: str) -> Path | None:
    """Where this backbone's cached classifier lives, or None where none is kept: no disk
    cache, or a fine-tuning stage (which may change the backbone)."""
    if options.runtime.cache is not CacheMode.DISK or options.hyper.fine_tune.enabled:
        return None
    return template_path(options.runtime.cache_root, options_key(options.model, digest))


def classifier_template(options: TrainOptions, digest: str) -> Path | None:
    """The cached classifier on this backbone that the run's model.keras can be written
    from, or None."""
    path = _template(options, digest)
    return path if path is not None and path.is_file() else None


def keep_classifier(options: TrainOptions, digest: str, model_path: Path) -> None:
    """Cache the model.keras that Keras saved for later runs on the same weights file (not
    for random weights, whose digest no later run shares)."""
    path = _template(options, digest)
    if path is not None and weights_file(options.model) is not None:
        keep_template(model_path, path)
