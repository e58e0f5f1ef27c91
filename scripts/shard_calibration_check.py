#!/usr/bin/env python
"""Sharded TensorFlow calibration (trainer/export/calibration_shards.py) against TensorFlow's
single pass: the same ranges bit for bit, the same int8 file byte for byte, and the time.

Two models:

- ``tiny``: MobileNetV2 alpha 0.35 at 96 px, weights=None, a 3-class softmax head (random
  weights; raw pixels in, as the exporter's models take them), 64 random-pixel samples;
- ``standin``: the stand-in run's classifier (MobileNetV2 1.0 at 224 px, real ImageNet
  weights; scripts/bench_calibrator.py's run under --work, made there if missing) and the
  64 calibration images the exporter picks.

For each: the float model TensorFlow's converter hands its calibrator (bias correction on,
as the default export does); TensorFlow's `Calibrator.calibrate` on all samples vs
`calibrate_in_shards` (per shard count): calibrated model bytes equal, every tensor's min
and max equal as floats; then `convert_detailed` int8 with $TLEDGE_CALIBRATION_SHARDS=1
(TensorFlow's single pass) vs the default: the .tflite bytes equal. Also: two shards on two
threads of this process (the GIL question). Timings are single runs unless --repeat.

    TF_CPP_MIN_LOG_LEVEL=2 TLEDGE_WEIGHTS=... flock /work/bench.lock .venv/bin/python scripts/shard_calibration_check.py [--models tiny standin] [--repeat 2]

Writes scripts/results/shard_calibration_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

RESULT = ROOT / "scripts" / "results" / "shard_calibration_check.json"


def tiny_case() -> tuple[Any, Any]:
    import keras
    import numpy as np

    from trainer.export.convert import representative_images

    keras.utils.set_random_seed(0)
    inputs = keras.Input((96, 96, 3))
    x = keras.layers.Rescaling(1 / 127.5, -1)(inputs)
    x = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None, pooling="avg")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    images = np.random.default_rng(0).integers(0, 256, (64, 96, 96, 3), dtype=np.uint8)
    return model, representative_images(images)


def standin_case(work: Path, weights: Path) -> tuple[Any, Any]:
    from bench_calibrator import calibration_inputs, standin_run
    from trainer.export.convert import representative_images

    run_dir, _ = standin_run(work, weights)
    model, images = calibration_inputs(run_dir)
    return model, representative_images(images)


def ranges(content: bytes) -> dict[int, tuple[float, float]]:
    from trainer.export.schema import tflite_schema

    model = tflite_schema().ModelT.InitFromPackedBuf(bytearray(content), 0)
    return {i: (float(t.quantization.min[0]), float(t.quantization.max[0])) for i, t in enumerate(model.subgraphs[0].tensors)
            if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min)}


def float_model(model: Any, samples: Any) -> bytes:
    """The float model TensorFlow's converter hands its calibrator (single pass, bias correction on)."""
    from bench_calibrator import float_model_of

    from trainer.export.convert import convert_detailed
    from trainer.export.options import CalibratorKind, IOType, QuantizationMode

    os.environ["TLEDGE_CALIBRATION_SHARDS"] = "1"
    try:
        return float_model_of(lambda: convert_detailed(model, QuantizationMode.INT8, IOType.UINT8, samples, True, CalibratorKind.TENSORFLOW))
    finally:
        del os.environ["TLEDGE_CALIBRATION_SHARDS"]


def check(name: str, model: Any, samples: Any, shard_counts: list[int], repeat: int) -> dict[str, Any]:
    from tensorflow.lite.python.optimize import calibrator as tf_calibrator

    from trainer.export.calibration_shards import _wrapper_path, calibrate_in_shards
    from trainer.export.convert import convert_detailed
    from trainer.export.options import CalibratorKind, IOType, QuantizationMode

    Calibrator = tf_calibrator.Calibrator
    content = float_model(model, samples)
    listed = list(samples())
    times: dict[str, list[float]] = {"single_pass_s": []}
    single = b""
    for _ in range(repeat):
        start = time.perf_counter()
        single = bytes(Calibrator(content).calibrate(samples))
        times["single_pass_s"].append(time.perf_counter() - start)
    theirs = ranges(single)
    row: dict[str, Any] = {"model": name, "samples": len(listed), "tensors_with_ranges": len(theirs), "by_shards": {}}
    for shards in shard_counts:
        spent = []
        for _ in range(repeat):
            start = time.perf_counter()
            first = Calibrator(content)
            merged, used = calibrate_in_shards(first.calibrate, content, _wrapper_path(first), listed, shards)
            spent.append(time.perf_counter() - start)
        ours = ranges(merged)
        row["by_shards"][str(shards)] = {
            "shards_used": used, "seconds": [round(s, 3) for s in spent], "median_s": round(statistics.median(spent), 3),
            "calibrated_model_bytes_identical": merged == single,
            "same_tensor_set": set(ours) == set(theirs),
            "tensors_min_and_max_exactly_equal": sum(ours.get(i) == r for i, r in theirs.items()),
        }
    row["single_pass_s"] = [round(s, 3) for s in times["single_pass_s"]]
    row["single_pass_median_s"] = round(statistics.median(times["single_pass_s"]), 3)
    row["two_threads"] = two_threads(Calibrator, content, listed)
    files = {}
    for label, env in (("single_pass", "1"), ("default", None)):
        if env is None:
            os.environ.pop("TLEDGE_CALIBRATION_SHARDS", None)
        else:
            os.environ["TLEDGE_CALIBRATION_SHARDS"] = env
        start = time.perf_counter()
        converted = convert_detailed(model, QuantizationMode.INT8, IOType.UINT8, samples, True, CalibratorKind.TENSORFLOW)
        files[label] = {"bytes": converted.model, "shards": converted.calibrator_shards, "note": converted.shards_note,
                        "conversion_s": round(time.perf_counter() - start, 3)}
    os.environ.pop("TLEDGE_CALIBRATION_SHARDS", None)
    row["int8_file"] = {
        "bytes_identical": files["single_pass"]["bytes"] == files["default"]["bytes"],
        "size": len(files["default"]["bytes"]),
        **{f"{label}_{key}": value[key] for label, value in files.items() for key in ("shards", "note", "conversion_s")},
    }
    return row


def two_threads(Calibrator: type, content: bytes, listed: list[Any]) -> dict[str, Any]:
    """Two halves on two threads of this process vs one after the other: does the calibrator let go of the GIL?"""
    half = len(listed) // 2
    parts = [listed[:half], listed[half:]]

    def one(part: list[Any]) -> None:
        Calibrator(content).calibrate(lambda: iter(part))

    start = time.perf_counter()
    for part in parts:
        one(part)
    sequential = time.perf_counter() - start
    threads = [threading.Thread(target=one, args=(part,)) for part in parts]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    threaded = time.perf_counter() - start
    return {"sequential_s": round(sequential, 3), "threads_s": round(threaded, 3), "speedup": round(sequential / threaded, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=("tiny", "standin"), default=["tiny", "standin"])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tledge-bench-calibrator"))
    parser.add_argument("--weights", type=Path, default=Path(os.environ.get("TLEDGE_WEIGHTS", "")))
    args = parser.parse_args()
    from bench_calibrator import _header

    result = {**_header(), "command": "scripts/shard_calibration_check.py " + " ".join(sys.argv[1:]), "rows": []}
    for name in args.models:
        model, samples = tiny_case() if name == "tiny" else standin_case(args.work, args.weights)
        counts = [2, 3, 4] if name == "tiny" else [2]
        result["rows"].append(check(name, model, samples, counts, args.repeat))
        print(json.dumps(result["rows"][-1], indent=2), flush=True)
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULT.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
