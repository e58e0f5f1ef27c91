#!/usr/bin/env python
"""Benchmark `tledge export` per quantization mode: size, test accuracy, agreement, latency.

    .venv/bin/python scripts/bench_export.py                 # trains clothing-small first
    .venv/bin/python scripts/bench_export.py --run runs/X    # uses an existing run

Without --run it trains a run on ../shared/datasets/clothing-small with the real ImageNet
weights ($TLEDGE_WEIGHTS or ../shared/weights/...), 224 px MobileNetV2 1.0, default
hyper-parameters. Every mode is exported with the real exporter (verification on val +
test with the edge runtime) into scripts/out/bench_bundles/<mode>/. Prints one JSON line
per mode and writes them to scripts/out/bench_export.json (rows of modes not re-run
are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
OUT = ROOT / "scripts" / "out"
MODES = ("float32", "float16", "dynamic", "int8")


def train_clothing(out_dir: Path) -> Path:
    """A real training run on clothing-small; returns its run directory."""
    from trainer.config import DataOptions, ModelOptions, TrainOptions, WeightsSpec
    from trainer.train import train

    data = SHARED / "datasets" / "clothing-small"
    if not data.is_dir():
        sys.exit(f"{data} is absent: pass --run RUN_DIR instead")
    weights = WeightsSpec.parse(os.environ.get("TLEDGE_WEIGHTS") or str(WEIGHTS))
    options = TrainOptions(data=DataOptions(data), model=ModelOptions(weights=weights), out_dir=out_dir, name="clothing-small")
    return train(options).run_dir


def bench_mode(run_dir: Path, mode: str, calibration_images: int, threads: int | None) -> dict:
    """Export `run_dir` in `mode` and return the benchmark row."""
    from trainer.export import ExportOptions, export

    options = ExportOptions(
        quantization=mode, calibration_images=calibration_images, out=OUT / "bench_bundles" / mode,
        force=True, accept_drop=True, threads=threads,
    )
    start = time.perf_counter()
    result = export(run_dir, options, log=lambda text: print(f"  [{mode}] {text}", file=sys.stderr))
    seconds = time.perf_counter() - start
    report = result.report
    test, val, pooled = report["splits"].get("test", {}), report["splits"].get("val", {}), report["splits"]["all"]
    return {
        "mode": mode,
        "io": report["io"],
        "size_bytes": report["model_size_bytes"],
        "test_images": test.get("images"),
        "float_test_accuracy": test.get("float_accuracy"),
        "tflite_test_accuracy": test.get("tflite_accuracy"),
        "test_top1_agreement": test.get("top1_agreement"),
        "test_drop_points": test.get("drop_points"),
        "val_images": val.get("images"),
        "float_val_accuracy": val.get("float_accuracy"),
        "tflite_val_accuracy": val.get("tflite_accuracy"),
        "val_test_drop_points": pooled["drop_points"],
        "val_test_top1_agreement": pooled["top1_agreement"],
        "mean_latency_ms": report["latency_ms"]["mean"],
        "mean_invoke_ms": report["latency_ms"]["invoke_mean"],
        "calibration_images": report["calibration_images"],
        "export_seconds": round(seconds, 1),
        "suffered": report["suffered"],
        "bundle": str(result.bundle_dir),
    }


def merge_rows(previous: list[dict], new: list[dict]) -> list[dict]:
    """`new` rows replace `previous` rows of the same mode; other modes are kept, in MODES order.

    So `--modes int8` re-measures one mode without dropping the others from the JSON that
    scripts/benchmarks.py turns into BENCHMARKS.md.
    """
    by_mode = {row["mode"]: row for row in previous if isinstance(row, dict) and "mode" in row}
    by_mode.update({row["mode"]: row for row in new})
    order = {mode: index for index, mode in enumerate(MODES)}
    return sorted(by_mode.values(), key=lambda row: order.get(row["mode"], len(order)))


def _previous_rows(path: Path) -> list[dict]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return rows if isinstance(rows, list) else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="an existing run directory (default: train clothing-small)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads (default: up to 4)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    OUT.mkdir(parents=True, exist_ok=True)
    run_dir = args.run or train_clothing(OUT / "runs")
    print(f"run: {run_dir}", file=sys.stderr)
    rows = []
    for mode in args.modes.split(","):
        row = {"run": str(run_dir), **bench_mode(run_dir, mode.strip(), args.calibration_images, args.threads)}
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)
    path = OUT / "bench_export.json"
    rows = merge_rows(_previous_rows(path), rows)
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
