"""Tiny real bundles for the lifecycle tests: a hand-weighted colour classifier converted
with TensorFlow (a second each), written in the bundle layout of models/README.md, with
a golden self-test made by the exporter's own writer (`trainer.export.selftest_writer`).

Helpers to damage bundles the ways the field does: a tampered model, a missing or
corrupt self-test file, a self-test whose expected outputs are wrong for this runtime.
"""

from __future__ import annotations

import warnings

import hashlib
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
from bundle_files import pack_bundle

COLOURS = ("red", "green", "blue", "gray")
PALETTE = {"red": (220, 30, 30), "green": (30, 220, 30), "blue": (30, 30, 220), "gray": (128, 128, 128)}


def colour_image(name: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A noisy RGB frame (height, width) dominated by one colour."""
    base = np.array(PALETTE[name], dtype=np.float64)
    return np.clip(base + rng.normal(0, 25, (*size, 3)), 0, 255).astype(np.uint8)


def keras_model(size: int, labels: tuple[str, ...]):
    """Each colour label scores its channel minus the other two; gray scores low contrast."""
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(len(labels))
    model = keras.Model(inputs, keras.layers.Softmax()(dense(x)))
    rows = {"red": [12, -6, -6], "green": [-6, 12, -6], "blue": [-6, -6, 12], "gray": [2, 2, 2]}
    weights = np.array([rows[label] for label in labels], dtype=np.float32).T
    dense.set_weights([weights, np.array([-1.0 if label == "gray" else 0.0 for label in labels], dtype=np.float32)])
    return model


def convert(model, size: int, mode: str) -> bytes:
    """"float32", or "uint8": full-integer int8 with uint8 input and output."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "uint8":
        rng = np.random.default_rng(7)
        samples = [colour_image(COLOURS[i % 4], (size, size), rng) for i in range(32)]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([s[None].astype(np.float32)] for s in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    with warnings.catch_warnings():
        # "Statistics for quantized inputs were expected": only the legacy converter takes
        # them; the representative dataset sets the input scale here.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs", category=UserWarning)
        return converter.convert()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(folder: Path, model_bytes: bytes, labels: tuple[str, ...], size: int, selftest: bool = True) -> Path:
    """A bundle folder; with `selftest`, reference images are drawn and the exporter's
    writer adds selftest.npz and its manifest entry."""
    info = {
        "format": "tledge.bundle", "format_version": 1, "name": folder.name, "labels": list(labels), "labels_file": "labels.txt",
        "input": {"height": size, "width": size, "channels": 3, "color_order": "RGB", "mean": 0.0, "std": 1.0, "resize": "center_crop"},
        "created_utc": "2026-11-30T00:00:00Z",
    }
    manifest = pack_bundle(folder, model_bytes, info)
    if selftest:
        from trainer.export.selftest_writer import build_selftest

        images = folder.parent / f".{folder.name}-refs"
        images.mkdir(exist_ok=True)
        rng = np.random.default_rng(3)
        items = []
        for index, label in enumerate(labels):
            path = images / f"{label}.png"
            cv2.imwrite(str(path), cv2.cvtColor(colour_image(label, (size + 8, size + 16), rng), cv2.COLOR_RGB2BGR))
            items.append((str(path), index))
        npz, entry = build_selftest(folder / "model.tflite", {"val": items})
        shutil.rmtree(images)
        (folder / "selftest.npz").write_bytes(npz)
        manifest["selftest"] = entry
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return folder


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def tamper_model(folder: Path) -> None:
    """Flip one byte in the middle of the model; the manifest keeps the old sha256."""
    path = folder / "model.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def rewrite_selftest(folder: Path, outputs_shift: int = 0, raw: bytes | None = None) -> None:
    """Replace selftest.npz (its outputs moved by `outputs_shift` codes/units, or with
    `raw` bytes) and record the new file's sha256, as a consistent but wrong bundle would."""
    path = folder / "selftest.npz"
    if raw is None:
        with np.load(path) as npz:
            arrays = {name: npz[name] for name in npz.files}
        out = arrays["outputs"]
        if np.issubdtype(out.dtype, np.integer):
            info = np.iinfo(out.dtype)
            # move away from the nearer end, so clipping never shrinks the shift
            shifted = np.where(out.astype(np.int64) > (info.max + info.min) / 2, out.astype(np.int64) - outputs_shift, out.astype(np.int64) + outputs_shift)
            arrays["outputs"] = np.clip(shifted, info.min, info.max).astype(out.dtype)
        else:
            arrays["outputs"] = (out + np.float32(outputs_shift)).astype(out.dtype)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        raw = buffer.getvalue()
    path.write_bytes(raw)
    manifest = read_manifest(folder)
    manifest["selftest"]["sha256"] = _sha(raw)
    manifest["selftest"]["size_bytes"] = len(raw)
    write_manifest(folder, manifest)


def colour_video(path: Path, frames_per_colour: int = 6, size: tuple[int, int] = (64, 48), fps: float = 20.0) -> Path:
    """An MJPG video cycling red, green, blue, gray; (width, height) pixels."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    rng = np.random.default_rng(5)
    for name in COLOURS:
        for _ in range(frames_per_colour):
            writer.write(cv2.cvtColor(colour_image(name, (size[1], size[0]), rng), cv2.COLOR_RGB2BGR))
    writer.release()
    return path
