#!/usr/bin/env python
"""Where does the int8 export lose top-1 agreement with the float model? (diagnosis only)

    .venv/bin/python scripts/int8_diagnosis.py --run scripts/out/runs/clothing-small-...

Converts the run's model to int8 exactly as `tledge export` does (same calibration
images; --no-bias-correction to see the file without trainer.bias_correction), then on one split (default val; never tune on test) measures:

  1. agreement, and the float model's top-2 margin on the images that disagree;
     weights-only: the Keras model with its conv kernels rounded as the converter rounds
     them (activations float), with and without trainer.bias_correction;
  2. backbone vs head: the float head applied to the int8 file's pooled features, and
     the int8 head (features quantized with the file's own scale) on float features;
  3. per-layer relative error ||int8 - float|| / ||float|| of every backbone activation
     (the interpreter keeps all tensors; the Keras layers give the float values);
  4. optional --range-factors: the calibrated ranges of the signed (linear bottleneck)
     tensors multiplied by each factor, re-quantized with TFLite's private MLIR
     quantizer (int8 I/O), on the model without bias correction: how much
     outlier-driven ranges cost;
  5. optional --mse-ranges: each signed backbone tensor's range shrunk by the factor
     (0.2..1) that minimizes its own quantization MSE on the calibration images.

Prints a table and writes scripts/out/int8_diagnosis_<split>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "scripts" / "out"
LAYER_TENSOR = re.compile(r"/backbone_1/(\w+?)_1/(Relu6|Add|batchnorm/add_1)")


def load_split(run, split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    from edge.images import load_rgb
    from edge.preprocess import resize_rgb

    items = run.splits[split][:limit]
    pixels = np.stack([resize_rgb(load_rgb(path), run.image_size, run.resize) for path, _ in items])
    return pixels.astype(np.uint8), np.array([label for _, label in items])


def interpreter(raw: bytes, keep: bool = False):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=raw, num_threads=2, experimental_preserve_all_tensors=keep)
    it.allocate_tensors()
    return it


def run_probs(raw: bytes, pixels: np.ndarray) -> np.ndarray:
    """Dequantized outputs of an integer-I/O file (uint8 or int8 input, scale 1)."""
    it = interpreter(raw)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    shift = 128 if inp["dtype"] == np.int8 else 0
    scale, zero = out["quantization"]
    probs = []
    for x in pixels:
        it.set_tensor(inp["index"], (x.astype(np.int16) - shift).astype(inp["dtype"])[None])
        it.invoke()
        probs.append((it.get_tensor(out["index"])[0].astype(np.float32) - zero) * scale)
    return np.array(probs)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def agreement(probs: np.ndarray, reference: np.ndarray) -> float:
    return float((probs.argmax(1) == reference.argmax(1)).mean())


def weights_only(model, pixels: np.ndarray, float_probs: np.ndarray, calibration: list[np.ndarray]) -> dict:
    """Agreement with conv kernels int8-rounded in Keras (float activations), plain and corrected."""
    import keras

    from trainer.export.bias_correction import bias_corrected, rounding_error

    def rounded(source):
        copy = keras.models.clone_model(source)
        copy.set_weights(source.get_weights())
        for layer in copy.get_layer("backbone").layers:
            if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D"):
                kernel, *rest = layer.get_weights()
                layer.set_weights([kernel + rounding_error(kernel, type(layer).__name__ == "DepthwiseConv2D"), *rest])
        return copy

    corrected, _ = bias_corrected(model, calibration)
    return {
        name: agreement(rounded(source).predict(pixels.astype(np.float32), batch_size=32, verbose=0), float_probs)
        for name, source in (("weights_only", model), ("weights_only_bias_corrected", corrected))
    }


def head_vs_backbone(model, raw: bytes, pixels: np.ndarray, float_probs: np.ndarray) -> dict:
    import keras

    features = keras.Model(model.input, model.get_layer("pool").output).predict(pixels.astype(np.float32), verbose=0)
    weights, bias = model.get_layer("probs").get_weights()
    it = interpreter(raw, keep=True)
    pool = next(d for d in it.get_tensor_details() if d["name"].endswith("pool_1/Mean"))
    scale, zero = pool["quantization"]
    inp = it.get_input_details()[0]
    int8_features = []
    for x in pixels:
        it.set_tensor(inp["index"], x[None].astype(inp["dtype"]))
        it.invoke()
        int8_features.append((it.get_tensor(pool["index"])[0].astype(np.float32) - zero) * scale)
    int8_features = np.array(int8_features)
    quantized = (np.clip(np.round(features / scale) + zero, -128, 127) - zero) * scale
    rel = np.linalg.norm(int8_features - features, axis=1) / np.linalg.norm(features, axis=1)
    return {
        "float_head_on_int8_features": agreement(softmax(int8_features @ weights + bias), float_probs),
        "quantized_float_features_float_head": agreement(softmax(quantized @ weights + bias), float_probs),
        "feature_relative_error_median": float(np.median(rel)),
    }


def layer_errors(model, raw: bytes, pixels: np.ndarray) -> list[dict]:
    import keras

    it = interpreter(raw, keep=True)
    pairs = [(m.group(1), d) for d in it.get_tensor_details() if (m := LAYER_TENSOR.search(d["name"])) and d["quantization"][0] > 0]
    backbone = model.get_layer("backbone")
    probe = keras.Model(backbone.input, [backbone.get_layer(name).output for name, _ in pairs])
    scaling = model.get_layer("scale_pixels")
    floats = probe.predict(np.asarray(scaling(pixels.astype(np.float32))), verbose=0)
    inp = it.get_input_details()[0]
    errors = np.zeros(len(pairs))
    for k, x in enumerate(pixels):
        it.set_tensor(inp["index"], x[None].astype(inp["dtype"]))
        it.invoke()
        for j, (_, detail) in enumerate(pairs):
            scale, zero = detail["quantization"]
            q = (it.get_tensor(detail["index"])[0].astype(np.float32) - zero) * scale
            errors[j] += np.linalg.norm(q - floats[j][k]) / np.linalg.norm(floats[j][k]) / len(pixels)
    return [{"layer": name, "relative_error": round(float(e), 4), "scale": float(d["quantization"][0])} for (name, d), e in zip(pairs, errors)]


def calibrated_model(model, representative) -> bytes:
    """The converter's calibration only (min/max recorded, not yet quantized)."""
    import tensorflow as tf

    height, width = model.input_shape[1:3]
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp + "/sm", format="tf_saved_model", verbose=False,
                     input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name="image")])
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp + "/sm")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter._experimental_calibrate_only = True  # private: diagnosis only
        return bytes(converter.convert())


def _quantization_mse(values: np.ndarray, low: float, high: float) -> float:
    scale = (high - low) / 255
    zero = np.round(-low / scale)
    return float(np.mean((values - (np.clip(np.round(values / scale) + zero, 0, 255) - zero) * scale) ** 2))


def mse_factors(calibrated: bytes, pixels: np.ndarray, per_image: int = 1000) -> dict[int, float]:
    """Per signed backbone tensor: the range factor minimizing its quantization MSE."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(calibrated, 0)).subgraphs[0]
    ranges = {}
    for op in graph.operators:
        q = graph.tensors[op.outputs[0]].quantization
        if q is not None and q.min is not None and q.min[0] < 0 and b"backbone" in graph.tensors[op.outputs[0]].name:
            ranges[op.outputs[0]] = (float(q.min[0]), float(q.max[0]))
    it = interpreter(calibrated, keep=True)
    inp = it.get_input_details()[0]
    rng = np.random.default_rng(0)
    samples: dict[int, list[np.ndarray]] = {index: [] for index in ranges}
    for x in pixels:
        it.set_tensor(inp["index"], x[None].astype(np.float32))
        it.invoke()
        for index in ranges:
            values = it.get_tensor(index).ravel()
            samples[index].append(rng.choice(values, min(per_image, values.size), replace=False))
    factors = {}
    for index, (low, high) in ranges.items():
        values = np.concatenate(samples[index])
        grid = np.linspace(0.2, 1.0, 33)
        factors[index] = float(grid[int(np.argmin([_quantization_mse(values, low * a, high * a) for a in grid]))])
    return factors


def scaled_ranges(calibrated: bytes, factor: float | dict[int, float]) -> bytes:
    """Quantize with the signed backbone tensors' calibrated ranges times `factor` (int8 I/O).

    `factor` is one number for all of them, or one per tensor index (others unchanged).
    """
    import flatbuffers
    import tensorflow as tf
    from tensorflow.lite.python import convert as tf_convert
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(calibrated, 0))
    graph = model.subgraphs[0]
    for op in graph.operators:
        tensor = graph.tensors[op.outputs[0]]
        q = tensor.quantization
        if q is not None and q.min is not None and q.min[0] < 0 and b"backbone" in tensor.name:
            by = factor.get(op.outputs[0], 1.0) if isinstance(factor, dict) else factor
            # float32 kept: a float64 array would be packed as the wrong bytes
            q.min, q.max = (q.min * by).astype(np.float32), (q.max * by).astype(np.float32)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(tf_convert.mlir_quantize(bytes(builder.Output()), fully_quantize=True, input_data_type=tf.int8, output_data_type=tf.int8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--limit", type=int, default=None, help="first N images of the split")
    parser.add_argument("--layer-images", type=int, default=24, help="images for the per-layer errors")
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument("--range-factors", default="", help="comma-separated, e.g. 0.7,0.5")
    parser.add_argument("--mse-ranges", action="store_true", help="also try per-tensor MSE-optimal ranges")
    parser.add_argument("--no-bias-correction", action="store_true", help="convert without trainer.bias_correction")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from trainer.export.convert import convert, representative_dataset, stratified_sample
    from trainer.export.exporter import _load_keras, read_run as load_run
    from trainer.export.options import IOType, QuantizationMode

    run = load_run(args.run)
    model = _load_keras(run)
    chosen = stratified_sample(run.splits["train"], args.calibration_images, 0)
    representative = representative_dataset([path for path, _ in chosen], run.image_size, run.resize)
    pixels, _ = load_split(run, args.split, args.limit)
    float_probs = model.predict(pixels.astype(np.float32), batch_size=32, verbose=0)
    raw = convert(model, QuantizationMode.INT8, IOType.UINT8, representative, bias_correction=not args.no_bias_correction)
    samples = np.concatenate([x for x, in representative()])  # (n, H, W, 3) float32
    calibration = [samples[start : start + 25] for start in range(0, len(samples), 25)]
    probs = run_probs(raw, pixels)
    top2 = np.sort(float_probs, axis=1)[:, -2:]
    differ = probs.argmax(1) != float_probs.argmax(1)
    report = {
        "run": str(args.run), "split": args.split, "images": len(pixels),
        "bias_correction": not args.no_bias_correction,
        "agreement": agreement(probs, float_probs),
        **weights_only(model, pixels, float_probs, calibration),
        "disagreeing_float_margins": np.round(top2[differ, 1] - top2[differ, 0], 3).tolist(),
        "float_margin_percentiles_5_10_25_50": np.round(np.percentile(top2[:, 1] - top2[:, 0], [5, 10, 25, 50]), 3).tolist(),
        **head_vs_backbone(model, raw, pixels, float_probs),
        "layers": layer_errors(model, raw, pixels[: args.layer_images]),
    }
    factors = [float(f) for f in args.range_factors.split(",") if f.strip()]
    if factors or args.mse_ranges:
        calibrated = calibrated_model(model, representative)
        report["range_factors"] = {str(f): agreement(run_probs(scaled_ranges(calibrated, f), pixels), float_probs) for f in factors}
    if args.mse_ranges:
        calibration_pixels = np.concatenate(calibration)[:150]
        report["mse_ranges"] = agreement(run_probs(scaled_ranges(calibrated, mse_factors(calibrated, calibration_pixels)), pixels), float_probs)
    for row in report["layers"]:
        print(f"  {row['layer']:32s} {row['relative_error']:.3f}  (scale {row['scale']:.4f})")
    print(json.dumps({k: v for k, v in report.items() if k != "layers"}, indent=1))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"int8_diagnosis_{args.split}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
