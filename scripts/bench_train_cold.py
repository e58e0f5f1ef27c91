#!/usr/bin/env python
"""`tledge train` on a cold cache, before and after (issue 13's "train cold <= 10 s").

On the stand-in set of `bench_photos_to_bundle.py` (two classes of clothing-small, 120
train + 80 val photos each; real ImageNet weights, 224 px), each command in its own
process (TensorFlow import included), before and after alternating so that a change in
the machine's load hits both:

- `tledge train DATA` with an empty cache (cold: the backbone is converted too);
- with `--warm`: also with only the converted backbone cached (new data);
- with `--one-command`: also `tledge train DATA --export --quantize`, cold (`--skip-cold`: only that).

"before" is BASE_REF checked out with `git worktree` into a temporary folder; "after" is
this checkout. Every row keeps the run's own stage timings (metrics.json), its val
accuracy and best val loss, the 1-minute load average when it started and the CPU
seconds of the process.

    .venv/bin/python scripts/bench_train_cold.py [--repeat 3] [--base-ref REF] [--warm] [--one-command]

Writes scripts/results/train_cold_profile.json (or --output) and prints one JSON line per row.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timed_cli import CLOTHING, ROOT, WEIGHTS, Bench, lscpu_model, make_standin  # noqa: E402

#: main when this benchmark was written (before the trainfast branch).
BASE_REF = "6f35e35"


def best_val_loss(run_dir: Path) -> float | None:
    """The lowest val loss of the head's epochs (the epoch early stopping kept)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = metrics.get("head", {}).get("best_epoch")
    lines = (run_dir / "history.csv").read_text().splitlines()
    header = lines[0].split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(",")))
        if row.get("stage") == "head" and row.get("epoch") == str(best) and row.get("val_loss"):
            return float(row["val_loss"])
    return None


def row(bench: Bench, side: str, kind: str, run: int, cache: Path, runs: Path, extra: list[str] = ()) -> dict[str, Any]:
    out = bench.train(cache, runs, list(extra))
    out.pop("result", None)
    out.update(side=side, kind=kind, run=run, val_loss=best_val_loss(Path(out["run_dir"])))
    print(json.dumps(out), flush=True)
    return out


def medians(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = sorted({k for r in rows for k, v in r["stages"].items() if isinstance(v, (int, float))})
    return {
        "runs": len(rows),
        "wall_s": round(statistics.median(r["wall_s"] for r in rows), 2),
        "wall_s_all": [r["wall_s"] for r in rows],
        "cpu_s": round(statistics.median(r["cpu_s"] for r in rows), 1),
        "stages": {k: round(statistics.median(r["stages"][k] for r in rows if isinstance(r["stages"].get(k), (int, float))), 2) for k in keys},
        "val_acc": sorted({r["val_acc"] for r in rows}),
        "val_loss": sorted({round(r["val_loss"], 6) for r in rows if r["val_loss"] is not None}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--base-ref", default=BASE_REF)
    parser.add_argument("--warm", action="store_true", help="also train with the converted backbone cached")
    parser.add_argument("--one-command", action="store_true", help="also time tledge train --export --quantize (cold)")
    parser.add_argument("--skip-cold", action="store_true", help="with --one-command: time only that")
    parser.add_argument("--weights", type=Path, default=Path(os.environ.get("TLEDGE_WEIGHTS") or WEIGHTS))
    parser.add_argument("--output", default="train_cold_profile")
    args = parser.parse_args()
    if not CLOTHING.is_dir() or not args.weights.is_file():
        raise SystemExit(f"needs {CLOTHING} and the real weights ({args.weights}); see ../shared/README.md")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tledge-train-cold-") as tmp_name:
        tmp = Path(tmp_name)
        data = make_standin(tmp / "data")
        base = tmp / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base_ref], check=True, capture_output=True)
        sides = {"before": Bench(base, data, tmp, args.weights), "after": Bench(ROOT, data, tmp, args.weights)}
        try:
            for i in range(args.repeat):
                order = ("before", "after") if i % 2 == 0 else ("after", "before")  # alternate which goes first
                for side in order:
                    bench = sides[side]
                    cache = tmp / f"cache-{side}-{i}"
                    if not args.skip_cold:
                        rows.append(row(bench, side, "cold", i, cache, tmp / f"runs-{side}"))
                    if args.warm and not args.skip_cold:
                        warm = tmp / f"cache-{side}-{i}-warm"
                        shutil.copytree(cache / "backbones", warm / "backbones")
                        rows.append(row(bench, side, "backbone_cached", i, warm, tmp / f"runs-{side}-warm"))
                    if args.one_command:
                        extra = ["--export", "--quantize", "--bundle-out", str(tmp / f"bundle-{side}-{i}")]
                        rows.append(row(bench, side, "one_command", i, tmp / f"cache-{side}-{i}-one", tmp / f"runs-{side}-one", extra))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)
    summary: dict[str, Any] = {}
    for kind in ("cold", "backbone_cached", "one_command"):
        for side in ("before", "after"):
            group = [r for r in rows if r["side"] == side and r["kind"] == kind]
            if group:
                summary[f"{side}_{kind}"] = medians(group)
        if f"before_{kind}" in summary and f"after_{kind}" in summary:
            summary[f"{kind}_saved_s"] = round(summary[f"before_{kind}"]["wall_s"] - summary[f"after_{kind}"]["wall_s"], 2)
    result = {
        "command": "scripts/bench_train_cold.py " + " ".join(sys.argv[1:]),
        "started_utc": started,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu_model": lscpu_model(), "cpus": os.cpu_count(), "load_avg_at_start": rows[0]["load_avg_1m"], "load_avg_at_end": round(os.getloadavg()[0], 2)},
        "base_ref": args.base_ref,
        "after_commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "summary": summary,
        "rows": rows,
    }
    out = ROOT / "scripts" / "results" / f"{args.output}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
