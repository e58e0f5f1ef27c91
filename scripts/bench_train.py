"""Benchmark `tledge train` against the original Keras transfer-learning recipe.

The recipe: `image_dataset_from_directory` at 224 px, MobileNetV2 frozen base inside
`model.fit` (so the backbone runs on every image in every epoch), GAP + dropout 0.2 +
dense softmax, Adam 1e-3, the same number of epochs. tledge: its default settings, with
a cold feature cache (first run on new data) and a warm one (a re-run).

Each side runs as its own process (TensorFlow import included in the wall time) and
prints one JSON line; the summary line gives the speed-up ratios. Results go to
scripts/out/bench_train.json.

    .venv/bin/python scripts/bench_train.py [--data DIR] [--weights PATH] [--subset N]
        [--epochs 3] [--repeat 1] [--skip-recipe]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DEFAULT_DATA = SHARED / "datasets" / "clothing-small"
DEFAULT_WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import bench_common as bc  # noqa: E402


def timed(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run `cmd`; return it, its wall seconds and its CPU seconds (user + system, all threads).

    CPU seconds do not grow when other processes compete for the cores, so they compare
    fairly on a shared machine where wall time does not."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, wall, cpu


def emit(row: dict) -> dict:
    row["load_avg_1m"] = round(os.getloadavg()[0], 2)  # this machine is shared: context for the timings
    print(json.dumps(row), flush=True)
    return row


def run_tledge(data: Path, weights: Path, cache: Path, out: Path, subset: int | None, extra: list[str]) -> dict:
    """One `tledge train --json` process; returns its summary plus the measured wall time."""
    cmd = [sys.executable, "-m", "edge.cli", "train", str(data), "--weights", str(weights), "--out", str(out), "--json", *extra]
    if subset:
        cmd += ["--subset", str(subset)]
    env = {**os.environ, "TLEDGE_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc, wall, cpu = timed(cmd, env)
    if proc.returncode != 0:
        raise SystemExit(f"tledge train failed:\n{proc.stderr[-4000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 1), "val_acc": summary["val_accuracy"], "test_acc": summary["test_accuracy"],
            "val_n": (summary.get("val_interval") or {}).get("n"), "test_n": (summary.get("test_interval") or {}).get("n"),
            "head_epochs": summary["head_epochs"], "features": summary["features"]}


def run_recipe_process(data: Path, weights: Path, epochs: int, subset: int | None) -> dict:
    cmd = [sys.executable, __file__, "--recipe-only", "--data", str(data), "--weights", str(weights), "--epochs", str(epochs)]
    if subset:
        cmd += ["--subset", str(subset)]
    proc, wall, cpu = timed(cmd, {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode != 0:
        raise SystemExit(f"recipe failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**result, "wall_s": round(wall, 2), "cpu_s": round(cpu, 1)}


def recipe(data: Path, weights: Path, epochs: int, subset: int | None) -> dict:
    """The original recipe, in this process. Prints its JSON result."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(42)
    with tempfile.TemporaryDirectory() as tmp:
        root = _subset_links(data, Path(tmp), subset) if subset else data

        def load(split: str, shuffle: bool) -> tf.data.Dataset:
            return keras.utils.image_dataset_from_directory(root / split, image_size=(224, 224), batch_size=32, label_mode="int", shuffle=shuffle, seed=42)

        train, val = load("train", True), load("val", False)
        test = load("test", False) if (root / "test").is_dir() else None  # e.g. issue 13's train/ + val/ stand-in
        base = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights=str(weights))
        base.trainable = False
        inputs = keras.Input((224, 224, 3))
        x = keras.applications.mobilenet_v2.preprocess_input(inputs)
        x = base(x, training=False)
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dropout(0.2)(x)
        outputs = keras.layers.Dense(len(train.class_names), activation="softmax")(x)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        start = time.perf_counter()
        history = model.fit(train, validation_data=val, epochs=epochs, verbose=0)
        fit_s = time.perf_counter() - start
        test_acc = model.evaluate(test, verbose=0)[1] if test is not None else None
    result = {"fit_s": round(fit_s, 2), "val_acc": round(float(history.history["val_accuracy"][-1]), 4), "test_acc": None if test_acc is None else round(float(test_acc), 4),
              "val_n": len(val.file_paths), "test_n": None if test is None else len(test.file_paths), "epochs": epochs}
    print(json.dumps(result), flush=True)
    return result


def _subset_links(data: Path, tmp: Path, subset: int) -> Path:
    """The first `subset` files per class and split (the order tledge's --subset does not
    share, but the same count), as symlinks: nothing is copied."""
    import random

    for split in ("train", "val", "test"):
        for cls in sorted(p for p in (data / split).iterdir() if p.is_dir()):
            files = sorted(cls.iterdir())
            random.Random(f"{split}:{cls.name}").shuffle(files)
            (tmp / split / cls.name).mkdir(parents=True)
            for f in files[:subset]:
                (tmp / split / cls.name / f.name).symlink_to(f)
    return tmp


def main() -> None:
    parser = argparse.ArgumentParser(description="tledge train vs the original Keras recipe")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--weights", type=Path, default=Path(os.environ.get("TLEDGE_WEIGHTS") or DEFAULT_WEIGHTS))
    parser.add_argument("--subset", type=int, default=None, help="at most N images per class and split (quick run)")
    parser.add_argument("--epochs", type=int, default=3, help="the recipe's epochs (and a tledge run with the same head epochs)")
    parser.add_argument("--repeat", type=int, default=1, help="tledge runs per configuration; medians are quoted")
    parser.add_argument("--skip-recipe", action="store_true")
    parser.add_argument("--output", default="bench_train", help="file name under scripts/out/ (without .json); "
                        "bench_train_more_epochs is shown as a second table in BENCHMARKS.md")
    parser.add_argument("--recipe-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recipe_only:
        recipe(args.data, args.weights, args.epochs, args.subset)
        return
    if not args.data.is_dir() or not args.weights.is_file():
        raise SystemExit(f"needs the data ({args.data}) and the real weights ({args.weights}); see ../shared/README.md")

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        cold, warm, same_epochs = [], [], []
        for i in range(args.repeat):
            cache = tmp_path / f"cache{i}"  # a fresh cache: the first run on new data
            cold.append(emit({"name": "tledge default, cold cache", "run": i, **run_tledge(args.data, args.weights, cache, tmp_path / "runs", args.subset, [])}))
            warm.append(emit({"name": "tledge default, warm cache", "run": i, **run_tledge(args.data, args.weights, cache, tmp_path / "runs", args.subset, [])}))
            same_epochs.append(emit({"name": f"tledge --epochs {args.epochs}, warm cache", "run": i,
                                     **run_tledge(args.data, args.weights, cache, tmp_path / "runs", args.subset, ["--epochs", str(args.epochs)])}))
        rows += cold + warm + same_epochs
        summary = {"name": "summary", "data": str(args.data), "subset": args.subset, "repeat": args.repeat, "cpus": os.cpu_count()}
        for label, group in (("tledge_cold", cold), ("tledge_warm", warm), ("tledge_same_epochs", same_epochs)):
            summary[f"{label}_wall_s"] = statistics.median(r["wall_s"] for r in group)
            summary[f"{label}_cpu_s"] = statistics.median(r["cpu_s"] for r in group)
            summary[f"{label}_val_acc"] = statistics.median(r["val_acc"] for r in group)
            summary[f"{label}_test_acc"] = statistics.median(r["test_acc"] for r in group)
        if not args.skip_recipe:
            rec = emit({"name": f"original recipe, {args.epochs} epochs", **run_recipe_process(args.data, args.weights, args.epochs, args.subset)})
            rows.append(rec)
            summary.update(recipe_wall_s=rec["wall_s"], recipe_cpu_s=rec["cpu_s"], recipe_fit_s=rec["fit_s"], recipe_val_acc=rec["val_acc"], recipe_test_acc=rec["test_acc"])
            summary["speedup_cold"] = round(rec["wall_s"] / summary["tledge_cold_wall_s"], 1)
            summary["speedup_warm"] = round(rec["wall_s"] / summary["tledge_warm_wall_s"], 1)
            summary["cpu_ratio_cold"] = round(rec["cpu_s"] / summary["tledge_cold_cpu_s"], 1)
            summary["cpu_ratio_warm"] = round(rec["cpu_s"] / summary["tledge_warm_cpu_s"], 1)
            summary["goal_10x_equal_or_better_accuracy"] = bool(summary["speedup_cold"] >= 10 and summary["tledge_cold_val_acc"] >= rec["val_acc"])
        rows.append(emit(summary))
    write_output(rows, " ".join(["scripts/bench_train.py", *sys.argv[1:]]), name=args.output)


def _pct(value: float | None) -> str:
    return bc.percent(value, "n/a")


def _acc(value: float | None, n: int | None) -> str:
    return bc.accuracy(value, n, "n/a")


def write_output(rows: list[dict], command: str, date_utc: str | None = None, name: str = "bench_train") -> None:
    """scripts/out/bench_train.json: the rows, a summary, a Markdown table and the goal."""
    summary = next(r for r in rows if r.get("name") == "summary")
    table = ["| configuration | wall s | CPU s | val acc | test acc | head epochs | load avg |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r.get("name") != "summary":
            table.append(f"| {r['name']} | {r['wall_s']:.1f} | {r.get('cpu_s', 'n/a')} | {_acc(r['val_acc'], r.get('val_n'))} | {_acc(r['test_acc'], r.get('test_n'))} | {r.get('head_epochs', r.get('epochs', ''))} | {r.get('load_avg_1m', '')} |")
    goals = []
    summary.setdefault("recipe_epochs", next((r.get("epochs") for r in rows if str(r.get("name", "")).startswith("original recipe")), None))
    if "recipe_wall_s" in summary:
        detail = (f"cold-cache tledge {summary['tledge_cold_wall_s']:.1f} s vs recipe {summary['recipe_wall_s']:.1f} s "
                  f"= {summary['speedup_cold']}x (warm cache {summary['speedup_warm']}x); CPU seconds {summary.get('cpu_ratio_cold', 'n/a')}x cold, "
                  f"{summary.get('cpu_ratio_warm', 'n/a')}x warm; val {_pct(summary['tledge_cold_val_acc'])} "
                  f"vs {_pct(summary['recipe_val_acc'])}, test {_pct(summary['tledge_cold_test_acc'])} vs {_pct(summary['recipe_test_acc'])}")
        goal = {"goal": ">= 10x faster than the original recipe at equal or better accuracy", "met": summary["goal_10x_equal_or_better_accuracy"], "detail": detail}
        goals.append(goal)
    data = {
        "command": command,
        "date_utc": date_utc or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"load_avg_1m": rows[0].get("load_avg_1m"), "cpus": os.cpu_count()},
        "markdown": "\n".join(table) + f"\n\nMedians over {summary['repeat']} run(s) per tledge configuration; each side is a fresh process (TensorFlow import included).",
        "goals": goals,
        "summary": summary,
        "rows": rows,
    }
    out = ROOT / "scripts" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
