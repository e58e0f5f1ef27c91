"""model.keras without Keras: the classifier's head read from it, and a new one written
from a template that differs only in the head.

Keras 3 saves a model as a zip archive (stored, not compressed) of metadata.json (Keras'
version, the date), config.json (the architecture) and model.weights.h5 (every layer's
variables, under `layers/<group>/vars/<i>`, the group named after the layer's class).
The classifier (trainer.model.build_classifier) ends in a dropout and one dense softmax
layer, whose kernel and bias are `layers/dense/vars/0` and `/1`.

Two classifiers with the same backbone weights (the feature-cache key names them), the
same number of classes and the same dropout differ only in those two arrays. So after a
run has saved its classifier through Keras, a copy is kept in the cache as a template
(`keep_template`); a later run with the same key writes its model.keras from that copy
with its own head (`write_with_head`), without importing TensorFlow, building the
backbone or serialising it (`tests/trainer/test_keras_file.py` loads such a file in Keras
and compares it, weight by weight, with Keras' own save).
"""

from __future__ import annotations

import io
import json
import zipfile
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np

from edge.atomic import write_bytes
from trainer.head import DenseHead

#: The dense layer's variables in model.weights.h5 (kernel, bias).
HEAD_VARS = ("layers/dense/vars/0", "layers/dense/vars/1")
#: The classifier's last top-level layers: dropout, then the dense softmax.
HEAD_LAYERS = ("Dropout", "Dense")
_ENTRIES = ("metadata.json", "config.json", "model.weights.h5")


class KerasFileError(ValueError):
    """model.keras (or a template) is not a classifier this module can read or write."""


def _check_config(config: dict, classes: int, where: str) -> None:
    layers = (config.get("config") or {}).get("layers") or []
    kinds = [layer.get("class_name") for layer in layers]
    if tuple(kinds[-2:]) != HEAD_LAYERS or kinds.count("Dense") != 1:
        raise KerasFileError(f"the classifier in {where} does not end in one dropout and dense layer ({kinds[-3:]})")
    dense = layers[-1].get("config") or {}
    if dense.get("activation") != "softmax":
        raise KerasFileError(f"the dense layer in {where} is not a softmax")
    if dense.get("units") != classes:
        raise KerasFileError(f"the dense layer in {where} has {dense.get('units')} units for {classes} classes")


def _read(path: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as archive:
            return {name: archive.read(name) for name in _ENTRIES}
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise KerasFileError(f"cannot read {path.name}: {exc}") from None


def read_head(path: Path, classes: int) -> DenseHead:
    """The dense softmax layer of the classifier saved at `path` (model.keras)."""
    import h5py

    entries = _read(path)
    try:
        _check_config(json.loads(entries["config.json"]), classes, path.name)
        with h5py.File(io.BytesIO(entries["model.weights.h5"]), "r") as f:
            kernel, bias = (np.asarray(f[name], np.float32) for name in HEAD_VARS)
    except (OSError, KeyError, ValueError) as exc:
        if isinstance(exc, KerasFileError):
            raise
        raise KerasFileError(f"cannot read the dense layer's weights from {path.name}: {exc}") from None
    if kernel.ndim != 2 or kernel.shape[1] != classes or bias.shape != (classes,):
        raise KerasFileError(f"the dense layer's weights in {path.name} are {kernel.shape} and {bias.shape} for {classes} classes")
    return DenseHead(kernel, bias)


def template_path(cache_root: Path, key: str, classes: int, dropout: float) -> Path:
    """Where the template for feature-cache key `key` (backbone, width, size, weights) with
    `classes` outputs and `dropout` lives, for the installed Keras."""
    return cache_root / "backbones" / f"{key}.classifier-{classes}-{dropout:g}-keras{version('keras')}.keras"


def keep_template(model_path: Path, template: Path) -> None:
    """Copy a model.keras that Keras saved to `template`, once (best effort: a cache that
    cannot be written only means the next run saves through Keras again)."""
    if template.is_file():
        return
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(template, model_path.read_bytes(), durable=False)
    except OSError:
        pass


def write_with_head(template: Path, head: DenseHead, dest: Path) -> None:
    """Write model.keras to `dest`: `template` with `head` as its dense layer and today's
    date in its metadata."""
    import h5py

    classes = head.bias.shape[0]
    entries = _read(template)
    _check_config(json.loads(entries["config.json"]), classes, template.name)
    weights = io.BytesIO(entries["model.weights.h5"])
    try:
        with h5py.File(weights, "r+") as f:
            for name, value in zip(HEAD_VARS, (head.kernel, head.bias)):
                if f[name].shape != value.shape:
                    raise KerasFileError(f"{template.name} holds {name} of shape {f[name].shape}, the head {value.shape}")
                f[name][...] = value
    except (OSError, KeyError) as exc:
        raise KerasFileError(f"cannot write the head into {template.name}: {exc}") from None
    metadata = json.loads(entries["metadata.json"])
    metadata["date_saved"] = datetime.now().strftime("%Y-%m-%d@%H:%M:%S")  # Keras' own format
    entries = {**entries, "metadata.json": json.dumps(metadata).encode(), "model.weights.h5": weights.getvalue()}
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in _ENTRIES:
            archive.writestr(name, entries[name])
