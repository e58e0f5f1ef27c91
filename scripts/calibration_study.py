#!/usr/bin/env python
"""How many calibration images int8 needs: activation-range and mean stability vs count.

The TFLite calibrator records each tensor's min and max over every calibration image,
and bias correction uses each conv input's per-channel mean. This script runs the
run's float model (a float32 .tflite with every intermediate tensor kept) over its
stratified calibration images in the exporter's order and reports, for growing counts
N, how far each tensor's range width and channel means still are from those over all
images. Ranges only grow with N, so "within 5 %" means a later image widens the range
by at most 5 %.

    .venv/bin/python scripts/calibration_study.py RUN_DIR [--max 240] [--output NAME]

Writes scripts/results/<NAME>.json (default calibration_study).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COUNTS = (8, 16, 32, 48, 64, 96, 128, 160, 200, 240, 300)


def _float_tflite(model, size: tuple[int, int]) -> bytes:
    import tensorflow as tf

    class _Holder(tf.Module):  # tracks the variables so the converter freezes them
        def __init__(self) -> None:
            super().__init__()
            self.v = [w.value for w in model.weights]

    fn = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([1, *size, 3], tf.float32)])
    return tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], _Holder()).convert()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--max", type=int, default=300, help="calibration images at most (the exporter's default is 300)")
    parser.add_argument("--output", default="calibration_study")
    args = parser.parse_args()

    import keras
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edge.images import load_rgb
    from edge.preprocess import ResizePolicy, resize_rgb

    try:
        from trainer.convert import stratified_sample
    except ImportError:  # after the trainer/export/ package split
        from trainer.export.convert import stratified_sample  # type: ignore[no-redef]

    run = json.loads((args.run_dir / "run.json").read_text())
    splits = json.loads((args.run_dir / "splits.json").read_text())
    size = tuple(run["image_size"])
    policy = ResizePolicy(run.get("resize", "center_crop"))
    chosen = stratified_sample([(p, int(c)) for p, c in splits["train"]], args.max, 0)
    model = keras.models.load_model(args.run_dir / "model.keras", compile=False)
    start = time.perf_counter()
    content = _float_tflite(model, size)
    interpreter = Interpreter(model_content=content, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    details = [d for d in interpreter.get_tensor_details() if d["dtype"] == np.float32 and len(d["shape"]) >= 2 and d["index"] != inp]
    lo = {d["index"]: [] for d in details}
    hi = {d["index"]: [] for d in details}
    means = {d["index"]: [] for d in details}
    for path, _ in chosen:
        pixels = resize_rgb(load_rgb(path), size, policy).astype(np.float32)[None]
        interpreter.set_tensor(inp, pixels)
        interpreter.invoke()
        for d in details:
            t = interpreter.get_tensor(d["index"])
            lo[d["index"]].append(float(t.min()))
            hi[d["index"]].append(float(t.max()))
            means[d["index"]].append(t.reshape(-1, t.shape[-1]).mean(axis=0) if t.ndim == 4 else t.reshape(-1))
    # activations only: tensors that change with the input (weights and constants do not)
    active = [i for i in lo if max(hi[i]) - min(lo[i]) > 0 and (np.ptp(lo[i]) > 0 or np.ptp(hi[i]) > 0)]
    total = len(chosen)
    rows = []
    for n in [c for c in COUNTS if c < total] + [total]:
        shortfall, mean_err = [], []
        for i in active:
            width_all = max(hi[i]) - min(lo[i])
            width_n = max(hi[i][:n]) - min(lo[i][:n])
            shortfall.append(1.0 - width_n / width_all)
            m_all = np.mean(means[i], axis=0)
            m_n = np.mean(means[i][:n], axis=0)
            scale = np.abs(m_all).max() or 1.0
            mean_err.append(float(np.abs(m_n - m_all).max() / scale))
        s = np.array(shortfall)
        rows.append({
            "images": n,
            "range_shortfall_median": round(float(np.median(s)), 4),
            "range_shortfall_p95": round(float(np.percentile(s, 95)), 4),
            "range_shortfall_max": round(float(s.max()), 4),
            "tensors_within_5pct": round(float(np.mean(s <= 0.05)), 4),
            "mean_rel_err_median": round(float(np.median(mean_err)), 4),
            "mean_rel_err_p95": round(float(np.percentile(mean_err, 95)), 4),
        })
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "command": "scripts/calibration_study.py " + " ".join(f"{a}" for a in os.sys.argv[1:]),
        "run": run.get("name"), "calibration_images": total, "activation_tensors": len(active),
        "seconds": round(time.perf_counter() - start, 1), "load_avg_1m": round(os.getloadavg()[0], 2),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows,
    }
    out = ROOT / "scripts" / "results" / f"{args.output}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
