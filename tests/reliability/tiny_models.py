"""Tiny real TFLite models converted with TensorFlow, and a hand-written tledge bundle
around them (the layout of models/README.md), for the model-file bad-input tests.

Tests may import TensorFlow; `edge/` never does. Conversions take about a second each.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _convert(model: Any) -> bytes:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def image_classifier_tflite(classes: int = 3, size: int = 16) -> bytes:
    """Raw RGB pixels (1, size, size, 3) float32 -> softmax (1, classes)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3), batch_size=1)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return _convert(keras.Model(inputs, outputs))


def dense_tflite() -> bytes:
    """Not an image classifier: a Dense layer on a (1, 10) vector."""
    import keras

    inputs = keras.Input((10,), batch_size=1)
    return _convert(keras.Model(inputs, keras.layers.Dense(2)(inputs)))


def two_output_tflite(size: int = 16) -> bytes:
    """An image model with two outputs (e.g. a detector's boxes and scores)."""
    import keras

    inputs = keras.Input((size, size, 3), batch_size=1)
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return _convert(keras.Model(inputs, [keras.layers.Dense(4)(x), keras.layers.Dense(2, activation="softmax")(x)]))


def segmentation_tflite(size: int = 16) -> bytes:
    """An image in, an image out: (1, H, W, 3) -> (1, H, W, 2)."""
    import keras

    inputs = keras.Input((size, size, 3), batch_size=1)
    return _convert(keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax")(inputs)))


def with_embedded(model: bytes, files: dict[str, bytes]) -> bytes:
    """Append a zip of `files` to the flatbuffer, as the metadata populator packs them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return model + buffer.getvalue()


def bundle_info(labels: list[str], size: int = 16) -> dict[str, Any]:
    """The tledge.json of a float32 bundle for `image_classifier_tflite`."""
    return {
        "format": "tledge.bundle",
        "format_version": 1,
        "tledge_version": "0.1.0",
        "name": "tiny",
        "labels": labels,
        "labels_file": "labels.txt",
        "input": {
            "height": size, "width": size, "channels": 3, "color_order": "RGB", "dtype": "float32",
            "value_range": [0, 255], "mean": 0.0, "std": 1.0, "resize": "center_crop",
        },
        "output": {"dtype": "float32", "activation": "softmax"},
        "quantization": "float32",
    }


def write_bundle(folder: Path, model: bytes, labels: list[str], manifest_overrides: dict[str, Any] | None = None) -> Path:
    """Write model.tflite (with embedded labels.txt + tledge.json), labels.txt and
    manifest.json into `folder`; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    info = bundle_info(labels)
    labels_text = "\n".join(labels) + "\n"
    packed = with_embedded(model, {"labels.txt": labels_text.encode(), "tledge.json": json.dumps(info).encode()})
    (folder / "model.tflite").write_bytes(packed)
    (folder / "labels.txt").write_text(labels_text, encoding="utf-8")
    manifest = {**info, "model": {"file": "model.tflite", "sha256": hashlib.sha256(packed).hexdigest(), "size_bytes": len(packed)}}
    manifest.update(manifest_overrides or {})
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return folder
