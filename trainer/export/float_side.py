"""The float model's answers on the verification images, from the training run's own
features and head instead of a second backbone pass.

`tledge train --export` has every val/test image's backbone features in memory (the
feature pass computed them, with the TFLite copy of the backbone checked against Keras
or with Keras itself), and the classifier's head is one dense softmax layer on them, so
the float model's top-1 answer is argmax(features . W + b): no image goes through the
float backbone again. Valid only while the backbone is the one that computed the
features, i.e. not after a kept fine-tuning stage.

`tledge export` of a run folder gets the same features from the disk feature cache that
run.json names (`feature_cache`: written only when the features are the saved
backbone's), looked up by each file's content digest as the feature pass stored them; a
file that changed or a cache that was cleared gives a miss, and any miss means the Keras
model answers instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import ExportError
from trainer.export.verify import FloatTop
from trainer.model import OUTPUT_NAME


def dense_weights(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (features, classes), bias) of the Keras classifier's dense softmax layer."""
    kernel, bias = model.get_layer(OUTPUT_NAME).get_weights()
    return kernel, bias


def head_float_top(
    head: tuple[np.ndarray, np.ndarray], vectors: Mapping[str, np.ndarray], splits: Mapping[str, Sequence[tuple[str, int]]]
) -> FloatTop | None:
    """A `FloatTop` answering from `vectors` (image path -> pooled features) through the
    dense layer `head` ((kernel, bias): `dense_weights`, or read from model.keras by
    `trainer.export.backbone_file.read_head`), or None when some verification image has
    no features (then the Keras model is used)."""
    needed = [path for items in splits.values() for path, _ in items]
    if not needed or any(path not in vectors for path in needed):
        return None
    kernel, bias = (np.asarray(w, np.float64) for w in head)

    def top(split: str, images: np.ndarray) -> np.ndarray:
        paths = [path for path, _ in splits[split]]
        if len(paths) != len(images):
            raise ExportError(f"{split}: {len(images)} images but {len(paths)} feature rows; please report this bug")
        x = np.stack([vectors[p] for p in paths]).astype(np.float64)
        return (x @ kernel + bias).argmax(axis=1).astype(np.int64)  # softmax keeps the argmax

    return top


def feature_cache_of(run: Mapping[str, Any]) -> tuple[Path, str] | None:
    """(root, key) of the feature cache run.json (`run`) names, or None when it names none."""
    where = run.get("feature_cache")
    if not isinstance(where, dict) or not isinstance(where.get("root"), str) or not isinstance(where.get("key"), str):
        return None
    return Path(where["root"]), where["key"]


def cached_features(run: Mapping[str, Any], splits: Mapping[str, Sequence[tuple[str, int]]]) -> dict[str, np.ndarray] | None:
    """Image path -> the training run's cached clean-view features, for every image in
    `splits`, from the cache run.json (`run`) names; None when it names none or any image
    misses (unreadable, changed since training, cache cleared)."""
    from trainer.config import CacheMode
    from trainer.features.cache import FeatureCache
    from trainer.features.views import CLEAN_VIEW

    where = feature_cache_of(run)
    if where is None:
        return None
    cache = FeatureCache(CacheMode.DISK, *where)
    if not cache.folder.is_dir():
        return None
    out: dict[str, np.ndarray] = {}
    for items in splits.values():
        for path, _ in items:
            try:
                digest = hashlib.sha1(Path(path).read_bytes()).hexdigest()  # the scan's digest of the file
            except OSError:
                return None
            vector = cache.get(digest, CLEAN_VIEW)
            if vector is None:
                return None
            out[str(path)] = vector
    return out
