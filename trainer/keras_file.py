"""model.keras without Keras: the classifier's head read from it, and a new one written
from a template that differs only in the head.

Keras 3 saves a model as a zip archive (stored, not compressed) of metadata.json (Keras'
version, the date), config.json (the architecture) and model.weights.h5 (every layer's
variables, under `layers/<group>/vars/<i>`, the group named after the layer's class).
The classifier (trainer.model.build_classifier) ends in a dropout and one dense softmax
layer, whose kernel and bias are `layers/dense/vars/0` and `/1`.

Two classifiers with the same backbone weights (the feature-cache key names them) differ
only in that dense layer (its units, kernel and bias) and the dropout's rate. So after a
run has saved its classifier through Keras, a copy is kept in the cache as a template
(`keep_template`); a later run on the same backbone, for any number of classes and any
dropout, writes its model.keras from that copy (`write_with_head`): the two config
fields set and the two arrays replaced, without importing TensorFlow, building the
backbone or serialising it. `tests/trainer/test_keras_file.py` loads such a file in Keras
and compares it, config and weights, with Keras' own save of the same classifier.
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


def _head_layers(config: dict, where: str) -> tuple[dict, dict]:
    """The config of the classifier's dropout and dense softmax layers (the last two)."""
    layers = (config.get("config") or {}).get("layers") or []
    kinds = [layer.get("class_name") for layer in layers]
    if tuple(kinds[-2:]) != HEAD_LAYERS or kinds.count("Dense") != 1:
        raise KerasFileError(f"the classifier in {where} does not end in one dropout and dense layer ({kinds[-3:]})")
    dropout, dense = (layer.get("config") or {} for layer in layers[-2:])
    if dense.get("activation") != "softmax":
        raise KerasFileError(f"the dense layer in {where} is not a softmax")
    return dropout, dense


def _read(path: Path) -> tuple[dict[str, bytes], dict, dict]:
    """The archive's entries, and its parsed config.json and metadata.json."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = {name: archive.read(name) for name in _ENTRIES}
        return entries, json.loads(entries["config.json"]), json.loads(entries["metadata.json"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise KerasFileError(f"cannot read {path.name}: {exc}") from None


def read_head(path: Path, classes: int) -> DenseHead:
    """The dense softmax layer of the classifier saved at `path` (model.keras)."""
    import h5py

    entries, config, _ = _read(path)
    _, dense = _head_layers(config, path.name)
    if dense.get("units") != classes:
        raise KerasFileError(f"the dense layer in {path.name} has {dense.get('units')} units for {classes} classes")
    try:
        with h5py.File(io.BytesIO(entries["model.weights.h5"]), "r") as f:
            kernel, bias = (np.asarray(f[name], np.float32) for name in HEAD_VARS)
    except (OSError, KeyError, ValueError) as exc:
        raise KerasFileError(f"cannot read the dense layer's weights from {path.name}: {exc}") from None
    if kernel.ndim != 2 or kernel.shape[1] != classes or bias.shape != (classes,):
        raise KerasFileError(f"the dense layer's weights in {path.name} are {kernel.shape} and {bias.shape} for {classes} classes")
    return DenseHead(kernel, bias)


def template_path(cache_root: Path, key: str) -> Path:
    """Where the template for feature-cache key `key` (backbone, width, size, weights)
    lives, for the installed Keras."""
    return cache_root / "backbones" / f"{key}.classifier-keras{version('keras')}.keras"


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


def write_with_head(template: Path, head: DenseHead, dropout: float, dest: Path) -> None:
    """Write model.keras to `dest`: `template` with `head` as its dense layer (its units
    and weights), `dropout` as its dropout rate and today's date in its metadata."""
    import h5py

    entries, config, metadata = _read(template)
    dropout_layer, dense = _head_layers(config, template.name)
    dense["units"] = int(head.bias.shape[0])
    dropout_layer["rate"] = float(dropout)
    weights = io.BytesIO(entries["model.weights.h5"])
    try:
        with h5py.File(weights, "r+") as f:
            features = f[HEAD_VARS[0]].shape[0]
            if features == head.kernel.shape[0]:
                for name, value in zip(HEAD_VARS, (head.kernel, head.bias)):
                    if f[name].shape == value.shape:
                        f[name][...] = value
                    else:  # another number of classes
                        del f[name]
                        f.create_dataset(name, data=value)
    except (OSError, KeyError, ValueError) as exc:
        raise KerasFileError(f"cannot write the head into {template.name}: {exc}") from None
    if features != head.kernel.shape[0]:
        raise KerasFileError(f"the dense layer in {template.name} takes {features} features, the head {head.kernel.shape[0]}")
    metadata["date_saved"] = datetime.now().strftime("%Y-%m-%d@%H:%M:%S")  # Keras' own format
    entries = {"metadata.json": json.dumps(metadata).encode(), "config.json": json.dumps(config).encode(), "model.weights.h5": weights.getvalue()}
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in _ENTRIES:
            archive.writestr(name, entries[name])
