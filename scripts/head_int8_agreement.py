#!/usr/bin/env python
"""int8 top-1 agreement on a real set as the head's seed changes, for one or more source
trees: `tledge train DATA --seed S` then `tledge export RUN --quantize`, each its own
process, and report.json's agreement per split.

How close clothing-small's test agreement sits to issue 13's 98.5 % bar depends on the
head as much as on the export; this measures that spread, and whether two ways of fitting
the head (e.g. the Keras head before 85f5f01 and the NumPy head after) differ in it.

    .venv/bin/python scripts/head_int8_agreement.py DATA --tree /path/to/worktree [--tree ...] [--seeds 1 2 3]
        [--variant NAME='EXPORT ARGS' ...] [--output NAME]

Each run is exported the default way and, per --variant, with those extra export
arguments too: the same head through another export recipe.

The weights come from $TLEDGE_WEIGHTS, the cache from $TLEDGE_CACHE (keep it warm: train
DATA once first, so each run's features come from the cache). Prints one JSON line per
run; with --output, writes scripts/results/NAME.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timed_cli import lscpu_model, tree_commit, write_result

ROOT = Path(__file__).resolve().parents[1]


def tledge(tree: Path, args: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "edge.cli", *args], cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"tledge {' '.join(args)} failed in {tree}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--tree", type=Path, action="append", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                        help="also export each run with these extra `tledge export` arguments, e.g. keras_240='--calibrator litert --calibration-images 240'")
    parser.add_argument("--output")
    args = parser.parse_args()
    variants = {"default": []} | {name: extra.split() for name, extra in (v.split("=", 1) for v in args.variant)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="tledge-head-agreement-") as work:
        for seed in args.seeds:
            for tree in args.tree:
                run = json.loads(tledge(tree, ["train", str(args.data_dir), "--seed", str(seed), "--out", f"{work}/runs", "--json"]).strip().splitlines()[-1])
                for variant, extra in variants.items():
                    bundle = f"{work}/bundle-{len(rows)}"
                    tledge(tree, ["export", run["run_dir"], "--quantize", "--out", bundle, *extra])
                    report = json.loads(Path(bundle, "report.json").read_text())
                    row = {"tree": str(tree), "commit": tree_commit(tree), "seed": seed, "variant": variant, "export_args": extra,
                           "val_acc": run["val_accuracy"], "test_acc": run["test_accuracy"],
                           "converted_from": report.get("converted_from"), "calibration_images": report.get("calibration_images"), "drop_points": report.get("drop_points"),
                           **{f"{split}_agreement": round(v["top1_agreement"], 4) for split, v in report["splits"].items()},
                           **{f"{split}_disagreements": v["images"] - round(v["top1_agreement"] * v["images"]) for split, v in report["splits"].items()}}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    groups = dict.fromkeys((r["commit"], r["variant"]) for r in rows)
    summary = {
        f"{commit} {variant}": {key: statistics.median(r[key] for r in rows if (r["commit"], r["variant"]) == (commit, variant))
                                for key in ("test_agreement", "val_agreement", "test_disagreements", "drop_points")}
        for commit, variant in groups
    }
    print(json.dumps({"median": summary}))
    if args.output:
        result = {"command": "scripts/head_int8_agreement.py " + " ".join(sys.argv[1:]), "cpu": lscpu_model(), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "median": summary, "rows": rows}
        write_result(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
