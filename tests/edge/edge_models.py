"""Tiny real .tflite models for the edge tests, converted here with tf.lite.

The model is a colour classifier with hand-set weights, so its answers are decisive
and known in advance: Rescaling(1/255) -> 1x1 Conv (identity) -> global average ->
Dense(4) -> softmax over ("red", "green", "blue", "gray"). A pure red frame must come
out "red": a runtime that fed B,G,R would say "blue". Pixels go in raw (0..255), as in a
tledge bundle. Built once per session in three flavours: float32 input/output, int8
with uint8 input/output (tledge's default) and int8 with int8 input/output.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from bundle_files import pack_bundle

LABELS = ("red", "green", "blue", "gray")
SIZE = 32  # pixels: model input height = width


def build_keras_model():
    """The colour classifier (Keras 3), weights set by hand."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    conv = keras.layers.Conv2D(3, 1, use_bias=False)
    x = conv(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(len(LABELS))
    outputs = keras.layers.Softmax()(dense(x))
    model = keras.Model(inputs, outputs)
    conv.set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3)])
    # Each colour class scores its channel minus the other two; "gray" scores low contrast.
    weights = np.array([[12, -6, -6, 2], [-6, 12, -6, 2], [-6, -6, 12, 2]], dtype=np.float32)
    dense.set_weights([weights, np.array([0, 0, 0, -1], dtype=np.float32)])
    return model


def colour_images(count: int, size: tuple[int, int], seed: int) -> list[np.ndarray]:
    """Noisy frames (height, width) dominated by one of red, green, blue, or gray."""
    rng = np.random.default_rng(seed)
    images = []
    palette = [(220, 30, 30), (30, 220, 30), (30, 30, 220), (128, 128, 128)]
    for i in range(count):
        base = np.array(palette[i % 4], dtype=np.float64)
        noise = rng.normal(0, 25, (*size, 3))
        images.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return images


def convert(model, mode: str) -> bytes:
    """Keras -> .tflite bytes: "float32", "uint8" (int8, uint8 io) or "int8" (int8 io)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "float32":
        samples = colour_images(32, (SIZE, SIZE), seed=7)

        def representative():
            for img in samples:
                yield [img[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8 if mode == "uint8" else tf.int8
        converter.inference_output_type = tf.uint8 if mode == "uint8" else tf.int8
    with warnings.catch_warnings():
        # "Statistics for quantized inputs were expected": only the legacy converter takes
        # them; the representative dataset sets the input scale here (as in trainer.convert).
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs", category=UserWarning)
        return converter.convert()


def write_bundle(folder: Path, model_bytes: bytes, labels=LABELS, resize: str = "center_crop", quantization: str = "int8") -> Path:
    """A tledge bundle (models/README.md): labels + tledge.json zipped onto the model."""
    info = {
        "format": "tledge.bundle",
        "format_version": 1,
        "name": folder.name,
        "labels": list(labels),
        "labels_file": "labels.txt",
        "input": {"height": SIZE, "width": SIZE, "channels": 3, "color_order": "RGB", "mean": 0.0, "std": 1.0, "resize": resize},
        "quantization": quantization,
    }
    manifest = pack_bundle(folder, model_bytes, info)
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder
