#!/usr/bin/env python
"""`tledge export RUN --quantize` (default options) by a baseline tree and this one, alternating.

Written for sharded calibration (issue 13, fourth round): "before" a source tree of the
baseline commit (TensorFlow's single-pass calibrator), "after" this tree (the same
calibrator on one shard of the images per CPU; the same int8 file,
scripts/shard_calibration_check.py). Used again for later changes of the export (fifth
round: bias correction's means from the run's backbone file), with --output. Runs
alternate (before, after, before, ...) so a change in load hits both sides. Each export is
its own process, on the stand-in run of scripts/bench_calibrator.py (made there if
missing) or --run.

    flock /work/bench.lock .venv/bin/python scripts/bench_shard_export.py --before /tmp/base [--repeat 2] [--key NAME] [--output NAME]

Merges its rows under --key into scripts/results/<--output>.json (shard_calibration_export).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_calibrator import _header, standin_run  # noqa: E402
from timed_cli import WEIGHTS, Bench, fidelity, tree_commit  # noqa: E402

RESULT = ROOT / "scripts" / "results" / "shard_calibration_export.json"


def one_export(bench: Bench, work: Path, cache: Path, run_dir: Path, label: str, i: int, extra_env: dict[str, str]) -> dict[str, Any]:
    out = work / f"bundle-shard-{label}-{i}-{int(time.time())}"
    os.environ.pop("TLEDGE_CALIBRATION_SHARDS", None)
    os.environ.update(extra_env)  # Bench.env copies this process's environment
    try:
        row = bench.export(cache, str(run_dir), out, ["--quantize"])
    finally:
        for name in extra_env:
            os.environ.pop(name, None)
    report = row["result"]
    return {"side": label, "run": i, "wall_s": row["wall_s"], "cpu_s": row["cpu_s"], "load_avg_1m": row["load_avg_1m"], "stages": row["stages"],
            "calibrator": report.get("calibrator"), "calibrator_shards": report.get("calibrator_shards"),
            "bias_correction_means": report.get("bias_correction_means"),
            **fidelity(report)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree of the baseline commit")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--single-pass-arm", action="store_true", help="also this tree with TLEDGE_CALIBRATION_SHARDS=1")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tledge-bench-calibrator"))
    parser.add_argument("--weights", type=Path, default=Path(os.environ.get("TLEDGE_WEIGHTS") or WEIGHTS))
    parser.add_argument("--run", type=Path, help="export this run instead of the stand-in's (e.g. a clothing-small run)")
    parser.add_argument("--cache", type=Path, help="with --run: the feature cache it was trained with ($TLEDGE_CACHE)")
    parser.add_argument("--key", default="standin")
    parser.add_argument("--output", default=RESULT.stem, help="result file name under scripts/results/, without .json")
    args = parser.parse_args()
    run_dir = args.run.resolve() if args.run else standin_run(args.work, args.weights)[0]
    cache = args.cache.resolve() if args.cache else args.work / "cache"  # $TLEDGE_CACHE: the float side reads the run's features there
    sides = [("before", Bench(args.before.resolve(), run_dir, args.work, args.weights), {}),
             ("after", Bench(ROOT, run_dir, args.work, args.weights), {})]
    if args.single_pass_arm:
        sides.append(("after_single_pass", Bench(ROOT, run_dir, args.work, args.weights), {"TLEDGE_CALIBRATION_SHARDS": "1"}))
    header = _header()
    rows = []
    for i in range(args.repeat):
        for label, bench, env in sides:
            rows.append(one_export(bench, args.work, cache, run_dir, label, i, env))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    summary = {}
    for label, _, _ in sides:
        group = [r for r in rows if r["side"] == label]
        summary[label] = {"wall_median_s": round(statistics.median(r["wall_s"] for r in group), 2),
                          "cpu_median_s": round(statistics.median(r["cpu_s"] for r in group), 1),
                          **{f"{k}_median": round(statistics.median(r["stages"][k] for r in group), 2) for k in group[0]["stages"]}}
    part = {**header, "command": "scripts/bench_shard_export.py " + " ".join(sys.argv[1:]), "run_dir": str(run_dir),
            "before_tree": str(args.before), "before_commit": tree_commit(args.before), "after_commit": tree_commit(ROOT), "rows": rows, "summary": summary, "load_avg_end": [round(x, 2) for x in os.getloadavg()]}
    output = RESULT.with_name(f"{args.output}.json")
    result = json.loads(output.read_text()) if output.is_file() else {}
    result[args.key] = part
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
