#!/usr/bin/env python
"""Photos to a verified int8 bundle: per-stage wall time before and after, and the Keras recipe.

Builds the stand-in dataset of issue 13 (two classes of ../shared's clothing-small,
120 train + 80 val photos each, as symlinks in train/ and val/ folders), then, in one
run on one machine, each as its own process (TensorFlow import included):

- before: `tledge train` (cold cache) and `tledge export --quantize` from the code at
  BASELINE_REF, checked out with `git worktree` into a temporary folder;
- after: the same two commands from this checkout, `tledge train` again with only the
  converted backbone cached (a new dataset on a machine that has trained before), and
  the one command `tledge train DATA --export --quantize` (cold cache), the headline;
- after, other modes: `tledge export --mode float16 / dynamic` of the same run;
- the seed's Keras recipe (scripts/bench_train.py's) at 3 and 10 epochs.

Per-stage times come from each process's own records: train's metrics.json timings
(scan, build, features, head) and export's progress lines, time-stamped as they arrive
on stderr (start -> "converting" -> "verifying" -> "bundle written" -> exit). Both the
old and the new code print those lines, so the stages compare like for like.

    .venv/bin/python scripts/bench_photos_to_bundle.py [--repeat 1] [--skip-recipe] [--baseline-ref REF]
    .venv/bin/python scripts/bench_photos_to_bundle.py --markdown   # tables from the last result file

Writes scripts/results/bench_photos_to_bundle.json (CPU model, load averages, every row,
medians and ratios) and prints one JSON line per row.
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

from timed_cli import CLASSES, CLOTHING, PER_CLASS, ROOT, WEIGHTS, Bench, fidelity, lscpu_model, make_standin, run_timed

#: main's commit when issue 13's work started: the "before" code.
BASELINE_REF = "501fae07a09a4fa3a5c00420ebf0f8a5730914ab"


def recipe(data: Path, weights: Path, epochs: int) -> dict[str, Any]:
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_train.py"), "--recipe-only", "--data", str(data), "--weights", str(weights), "--epochs", str(epochs)]
    row = run_timed(cmd, ROOT, {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return {**row, "val_acc": row["result"]["val_acc"], "epochs": epochs}


def baseline_tree(ref: str, dest: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(dest), ref], check=True, capture_output=True)
    return dest


def median(rows: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 2)


def median_stages(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in rows[0]["stages"].items():
        values = [r["stages"].get(key) for r in rows]
        numbers = [v for v in values if isinstance(v, (int, float))]
        out[key] = round(statistics.median(numbers), 2) if len(numbers) == len(values) and numbers else value
    return out


def emit(name: str, row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    row = {"name": name, **{k: v for k, v in row.items() if k not in ("result", "marks")}}
    print(json.dumps(row), flush=True)
    rows.append(row)
    return row


def _f(value: Any, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    """The BENCHMARKS.md tables of one result file."""
    s = result["summary"]
    m = result["machine"]
    lines = [f"Run {result['started_utc']} to {result['finished_utc']}, `{result['command'].strip()}`; CPU {m['cpu_model']} ({m['cpus']} cores); "
             f"load average {m['load_avg_at_start']} at the start, {m['load_avg_at_end']} at the end.", ""]
    lines += ["| step | before wall s | after wall s | ratio | before CPU s | after CPU s |", "| --- | --- | --- | --- | --- | --- |"]
    for key, label in (("train", "`tledge train` (cold cache)"), ("export", "`tledge export --quantize`")):
        b, a = s.get(f"before_{key}_wall_s"), s.get(f"after_{key}_wall_s")
        ratio = f"{b / a:.2f}x" if a and b else "n/a"
        lines.append(f"| {label} | {_f(b)} | {_f(a)} | {ratio} | {_f(s.get(f'before_{key}_cpu_s'))} | {_f(s.get(f'after_{key}_cpu_s'))} |")
    b, a = s.get("before_photos_to_bundle_wall_s"), s.get("after_one_command_wall_s")
    lines.append(f"| photos to bundle (before: train + export; after: `tledge train --export --quantize`) | {_f(b)} | {_f(a)} | "
                 f"{f'{b / a:.2f}x' if a and b else 'n/a'} | {_f((s.get('before_train_cpu_s') or 0) + (s.get('before_export_cpu_s') or 0))} | {_f(s.get('after_one_command_cpu_s'))} |")
    lines.append(f"| `tledge train`, new data, backbone already converted | | {_f(s.get('after_train_backbone_cached_wall_s'))} | | | {_f(s.get('after_train_backbone_cached_cpu_s'))} |")
    for key, label in (("one_command_backbone_cached", "one command, new data, backbone already converted"),
                       ("export_litert", "`tledge export --quantize`, `TLEDGE_CALIBRATOR=litert`"),
                       ("one_command_litert", "one command, `TLEDGE_CALIBRATOR=litert`")):
        if f"after_{key}_wall_s" in s:
            lines.append(f"| {label} | | {_f(s[f'after_{key}_wall_s'])} | | | {_f(s.get(f'after_{key}_cpu_s'))} |")
    lines += ["", "Per stage (seconds, wall):", "", "| stage | before | after |", "| --- | --- | --- |"]
    for group in ("train", "export"):
        before, after = s.get(f"before_{group}_stages", {}), s.get(f"after_{group}_stages", {})
        for key in list(dict.fromkeys([*before, *after])):
            lines.append(f"| {group}: {key} | {before.get(key, 'n/a')} | {after.get(key, 'n/a')} |")
    lines += ["", "| the seed's Keras recipe | wall s | CPU s | val acc | tledge train cold is faster by | backbone already converted: faster by |",
              "| --- | --- | --- | --- | --- | --- |"]
    for epochs in (3, 10):
        if f"recipe_{epochs}_wall_s" in s:
            cached = s.get(f"recipe_{epochs}_vs_after_train_backbone_cached")
            lines.append(f"| {epochs} epochs | {_f(s[f'recipe_{epochs}_wall_s'])} | {_f(s[f'recipe_{epochs}_cpu_s'])} | {_f(100 * s[f'recipe_{epochs}_val_acc'])}% | "
                         f"{s[f'recipe_{epochs}_vs_after_train_cold']}x (tledge val acc {_f(100 * s['after_train_val_acc'])}%) | "
                         f"{f'{cached}x' if cached else 'n/a'} |")
    lines += ["", "| export | calibration images | calibrator | float side | top-1 agreement | drop (points) | float acc | tflite acc | images |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, row in s.get("fidelity", {}).items():
        lines.append(f"| {key} | {row.get('calibration_images') or '-'} | {row.get('calibrator') or '-'} | {row.get('float_side')} | {_f(100 * row['agreement'], 2)}% | {row['drop_points']} | "
                     f"{_f(100 * row['float_acc'])}% | {_f(100 * row['tflite_acc'])}% | {row['images']} |")
    lines += ["", "| goal | met |", "| --- | --- |"] + [f"| {k} | {'yes' if v else '**no**'} |" for k, v in s.get("goals", {}).items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the tables of the last result file and exit")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration; medians are quoted")
    parser.add_argument("--baseline-ref", default=BASELINE_REF, help="git commit of the 'before' code")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-recipe", action="store_true")
    parser.add_argument("--litert", action="store_true", help="also run the after side's export and one command with TLEDGE_CALIBRATOR=litert")
    parser.add_argument("--weights", type=Path, default=Path(os.environ.get("TLEDGE_WEIGHTS") or WEIGHTS))
    parser.add_argument("--output", default="bench_photos_to_bundle", help="file name under scripts/results/ (without .json)")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads((ROOT / "scripts" / "results" / f"{args.output}.json").read_text())))
        return
    if not CLOTHING.is_dir() or not args.weights.is_file():
        raise SystemExit(f"needs {CLOTHING} and the real weights ({args.weights}); see ../shared/README.md")

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows: list[dict[str, Any]] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    fid: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tledge-p2b-") as tmp_name:
        tmp = Path(tmp_name)
        data = make_standin(tmp / "data")
        sides = {"after": Bench(ROOT, data, tmp, args.weights)}
        if not args.skip_baseline:
            sides["before"] = Bench(baseline_tree(args.baseline_ref, tmp / "baseline"), data, tmp, args.weights)
        try:
            for i in range(args.repeat):
                # Interleaved: before and after alternate, so a change in the machine's load hits both.
                for side, bench in sorted(sides.items(), key=lambda kv: kv[0] != "before"):
                    cache = tmp / f"cache-{side}-{i}"
                    trained = emit(f"{side}: tledge train (cold cache)", {"run": i, **bench.train(cache, tmp / f"runs-{side}")}, rows)
                    groups.setdefault(f"{side}_train", []).append(trained)
                    exported = bench.export(cache, trained["run_dir"], tmp / f"bundle-{side}-{i}", ["--quantize"])
                    fid[f"{side}_int8"] = fidelity(exported["result"])
                    groups.setdefault(f"{side}_export", []).append(emit(f"{side}: tledge export --quantize", {"run": i, **exported, **fid[f"{side}_int8"]}, rows))
                    if side != "after":
                        continue
                    warm_backbone = tmp / f"cache-after-backbone-{i}"
                    shutil.copytree(cache / "backbones", warm_backbone / "backbones")
                    groups.setdefault("after_train_backbone_cached", []).append(
                        emit("after: tledge train (new data, backbone already converted)", {"run": i, **bench.train(warm_backbone, tmp / "runs-after-b")}, rows))
                    warm_one = tmp / f"cache-after-one-backbone-{i}"
                    shutil.copytree(cache / "backbones", warm_one / "backbones")
                    one = bench.train(warm_one, tmp / "runs-after-one-b", ["--export", "--quantize", "--bundle-out", str(tmp / f"bundle-one-b-{i}")])
                    fid["after_one_command_backbone_cached_int8"] = fidelity(one["result"]["export"])
                    groups.setdefault("after_one_command_backbone_cached", []).append(
                        emit("after: tledge train --export --quantize (new data, backbone already converted, one command)",
                             {"run": i, **one, **fid["after_one_command_backbone_cached_int8"]}, rows))
                    one = bench.train(tmp / f"cache-after-one-{i}", tmp / "runs-after-one", ["--export", "--quantize", "--bundle-out", str(tmp / f"bundle-one-{i}")])
                    fid["after_one_command_int8"] = fidelity(one["result"]["export"])
                    groups.setdefault("after_one_command", []).append(
                        emit("after: tledge train --export --quantize (cold cache, one command)", {"run": i, **one, **fid["after_one_command_int8"]}, rows))
                    if args.litert:  # the same two commands with the int8 ranges measured by LiteRT
                        lite = bench.export(cache, trained["run_dir"], tmp / f"bundle-litert-{i}", ["--quantize"], calibrator="litert")
                        fid["after_int8_litert"] = fidelity(lite["result"])
                        groups.setdefault("after_export_litert", []).append(
                            emit("after: tledge export --quantize (TLEDGE_CALIBRATOR=litert)", {"run": i, **lite, **fid["after_int8_litert"]}, rows))
                        one = bench.train(tmp / f"cache-after-one-litert-{i}", tmp / "runs-after-one-litert",
                                          ["--export", "--quantize", "--bundle-out", str(tmp / f"bundle-one-litert-{i}")], calibrator="litert")
                        fid["after_one_command_int8_litert"] = fidelity(one["result"]["export"])
                        groups.setdefault("after_one_command_litert", []).append(
                            emit("after: tledge train --export --quantize (cold cache, one command, TLEDGE_CALIBRATOR=litert)",
                                 {"run": i, **one, **fid["after_one_command_int8_litert"]}, rows))
                    if i == 0:
                        for mode in ("float16", "dynamic"):
                            other = bench.export(cache, trained["run_dir"], tmp / f"bundle-{mode}", ["--mode", mode])
                            fid[f"after_{mode}"] = fidelity(other["result"])
                            emit(f"after: tledge export --mode {mode}", {"run": i, **other, **fid[f"after_{mode}"]}, rows)
            if not args.skip_recipe:
                for epochs in (3, 10):
                    groups[f"recipe_{epochs}"] = [emit(f"seed Keras recipe, {epochs} epochs", recipe(data, args.weights, epochs), rows)]
        finally:
            if "before" in sides:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "baseline")], capture_output=True)

    summary: dict[str, Any] = {"name": "summary"}
    for key, group in groups.items():
        summary[f"{key}_wall_s"] = median(group, "wall_s")
        summary[f"{key}_cpu_s"] = median(group, "cpu_s")
        if "stages" in group[0]:
            summary[f"{key}_stages"] = median_stages(group)
        if "val_acc" in group[0]:
            summary[f"{key}_val_acc"] = statistics.median(r["val_acc"] for r in group)
    for side in ("before", "after"):
        if f"{side}_train_wall_s" in summary:
            summary[f"{side}_photos_to_bundle_wall_s"] = round(summary[f"{side}_train_wall_s"] + summary[f"{side}_export_wall_s"], 2)
    if "after_one_command_wall_s" in summary:
        summary["headline_one_command_wall_s"] = summary["after_one_command_wall_s"]
    if "before_export_wall_s" in summary:
        summary["export_speedup"] = round(summary["before_export_wall_s"] / summary["after_export_wall_s"], 2)
        summary["train_speedup"] = round(summary["before_train_wall_s"] / summary["after_train_wall_s"], 2)
        summary["photos_to_bundle_speedup"] = round(summary["before_photos_to_bundle_wall_s"] / summary["after_one_command_wall_s"], 2)
    for epochs in (3, 10):
        if f"recipe_{epochs}_wall_s" in summary:
            summary[f"recipe_{epochs}_vs_after_train_cold"] = round(summary[f"recipe_{epochs}_wall_s"] / summary["after_train_wall_s"], 2)
            if "after_train_backbone_cached_wall_s" in summary:  # the backbone converted once per machine, as Keras keeps its weights
                summary[f"recipe_{epochs}_vs_after_train_backbone_cached"] = round(summary[f"recipe_{epochs}_wall_s"] / summary["after_train_backbone_cached_wall_s"], 2)
    summary["fidelity"] = fid
    summary["goals"] = {
        "photos_to_bundle_under_30_s": summary.get("headline_one_command_wall_s", 1e9) < 30,
        "export_quantize_at_most_15_s": summary.get("after_export_wall_s", 1e9) <= 15,
        "train_cold_at_most_10_s": summary.get("after_train_wall_s", 1e9) <= 10,
        "recipe_10_epochs_at_least_10x": summary.get("recipe_10_vs_after_train_cold", 0) >= 10,
        "train_backbone_cached_at_most_10_s": summary.get("after_train_backbone_cached_wall_s", 1e9) <= 10,
        "recipe_10_epochs_at_least_10x_backbone_cached": summary.get("recipe_10_vs_after_train_backbone_cached", 0) >= 10,
        "int8_agreement_at_least_99pct": fid.get("after_int8", {}).get("agreement", 0) >= 0.99,
        "int8_drop_at_most_half_point": fid.get("after_int8", {}).get("drop_points", 9) <= 0.5,
    }
    rows.append(summary)
    print(json.dumps(summary), flush=True)
    result = {
        "command": "scripts/bench_photos_to_bundle.py " + " ".join(sys.argv[1:]),
        "started_utc": started,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu_model": lscpu_model(), "cpus": os.cpu_count(), "load_avg_at_start": rows[0].get("load_avg_1m"),
                    "load_avg_at_end": round(os.getloadavg()[0], 2)},
        "baseline_ref": None if args.skip_baseline else args.baseline_ref,
        "dataset": {"classes": list(CLASSES), "per_class": PER_CLASS, "source": "../shared/datasets/clothing-small (val from its val+test)"},
        "summary": summary,
        "rows": rows,
    }
    out = ROOT / "scripts" / "results" / f"{args.output}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
