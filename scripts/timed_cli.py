#!/usr/bin/env python
"""tledge commands as timed processes on issue 13's stand-in set, for the benchmarks that
compare exports and trainings (bench_photos_to_bundle, bench_calibrator, bench_shard_export,
bench_train_cold).

The stand-in: two classes of ../shared's clothing-small, 120 train + 80 val photos each,
as symlinks in train/ and val/ folders (`make_standin`). `Bench` runs `tledge train` and
`tledge export` of one source tree as their own processes (TensorFlow import included),
with wall and CPU seconds and the times the export's progress lines appeared
(`run_timed`, `export_stages`); `train_stages` reads a run's own timings.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CLOTHING = SHARED / "datasets" / "clothing-small"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
CLASSES = ("longsleeve", "pants")
PER_CLASS = {"train": 120, "val": 80}
EXPORT_MARKS = (("converting", "load_s"), ("verifying", "convert_s"), ("bundle written", "verify_s"))


def make_standin(dest: Path) -> Path:
    """train/ and val/ with 120 + 80 photos of each class; val from clothing-small's val+test."""
    for cls in CLASSES:
        train = sorted((CLOTHING / "train" / cls).iterdir())
        held_out = sorted((CLOTHING / "val" / cls).iterdir()) + sorted((CLOTHING / "test" / cls).iterdir())
        random.Random(f"train:{cls}").shuffle(train)
        random.Random(f"val:{cls}").shuffle(held_out)
        for split, files in (("train", train[: PER_CLASS["train"]]), ("val", held_out[: PER_CLASS["val"]])):
            folder = dest / split / cls
            folder.mkdir(parents=True)
            for f in files:
                (folder / f.name).symlink_to(f)
    return dest


def write_result(name: str, result: dict[str, Any], indent: int = 2) -> Path:
    """Writes scripts/results/NAME.json: the committed result behind a cited figure."""
    out = ROOT / "scripts" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=indent) + "\n")
    return out


def lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "unknown")


def tree_commit(tree: Path) -> str:
    """The short commit of a source tree ("+changes" when its tracked files differ from it)."""
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(tree), "diff", "--quiet", "HEAD"]).returncode != 0
    return head + ("+changes" if dirty else "")


def run_timed(cmd: list[str], cwd: Path, env: dict[str, str], marks: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """Run `cmd`; wall and CPU seconds, stdout, and when each stderr mark first appeared."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[str, float] = {}
    tail: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line)
            del tail[:-40]
            for mark, _ in marks:
                if mark not in seen and mark in line:
                    seen[mark] = time.perf_counter() - start

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    stdout = proc.stdout.read() if proc.stdout else ""
    proc.wait()
    reader.join()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{''.join(tail)}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 1), "load_avg_1m": round(load, 2), "marks": seen, "result": result}


def export_stages(marks: dict[str, float], wall: float) -> dict[str, float | None]:
    """Seconds per export stage from the times its progress lines appeared."""
    points = [0.0] + [marks.get(mark) for mark, _ in EXPORT_MARKS] + [wall]
    names = ["start_to_converting_s", "conversion_s", "verification_s", "write_and_exit_s"]
    out: dict[str, float | None] = {}
    for name, a, b in zip(names, points, points[1:]):
        out[name] = None if a is None or b is None else round(b - a, 2)
    return out


def train_stages(run_dir: Path, wall: float) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    timings = metrics.get("timings", {})
    stages = {k: round(float(v), 2) for k, v in timings.items() if k != "before_write_s"}
    stages["write_s"] = round(float(summary["wall_s"]) - float(timings.get("before_write_s", 0.0)), 2)
    stages["process_outside_train_s"] = round(wall - float(summary["wall_s"]), 2)  # imports, CLI, exit
    stages["backbone_convert_s"] = metrics.get("features", {}).get("convert_s")
    stages["feature_engine"] = metrics.get("features", {}).get("engine")
    stages["views_per_s"] = metrics.get("features", {}).get("views_per_s")
    return stages


class Bench:
    """Runs the commands of one side (before or after) from one source tree."""

    def __init__(self, tree: Path, data: Path, work: Path, weights: Path) -> None:
        self.tree, self.data, self.work, self.weights = tree, data, work, weights

    def env(self, cache: Path, calibrator: str | None = None) -> dict[str, str]:
        env = {**os.environ, "TLEDGE_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(self.tree), "TLEDGE_WEIGHTS": str(self.weights)}
        env.pop("TLEDGE_CALIBRATOR", None)
        if calibrator:  # the int8 calibrator (TensorFlow's by default; the baseline knows no other)
            env["TLEDGE_CALIBRATOR"] = calibrator
        return env

    def cli(self) -> list[str]:
        # the CLI root moved from trainer.cli (the baseline) to edge.cli
        module = "trainer.cli" if (self.tree / "trainer" / "cli.py").is_file() else "edge.cli"
        return [sys.executable, "-m", module]

    def train(self, cache: Path, runs: Path, extra: list[str] = (), calibrator: str | None = None) -> dict[str, Any]:
        cmd = [*self.cli(), "train", str(self.data), "--weights", str(self.weights), "--out", str(runs), "--json", *extra]
        row = run_timed(cmd, self.tree, self.env(cache, calibrator), EXPORT_MARKS)
        summary = row["result"]["run"] if "run" in row["result"] else row["result"]
        row["run_dir"] = summary["run_dir"]
        row["stages"] = train_stages(Path(summary["run_dir"]), row["wall_s"])
        row["val_acc"] = summary["val_accuracy"]
        return row

    def export(self, cache: Path, run_dir: str, out: Path, mode_args: list[str], calibrator: str | None = None) -> dict[str, Any]:
        cmd = [*self.cli(), "export", run_dir, *mode_args, "--out", str(out), "--json"]
        row = run_timed(cmd, self.tree, self.env(cache, calibrator), EXPORT_MARKS)
        row["stages"] = export_stages(row["marks"], row["wall_s"])
        return row


def fidelity(report: dict[str, Any]) -> dict[str, Any]:
    pooled = report["splits"]["all"]
    return {"agreement": pooled["top1_agreement"], "drop_points": pooled["drop_points"], "float_acc": pooled["float_accuracy"],
            "tflite_acc": pooled["tflite_accuracy"], "images": pooled["images"], "calibration_images": report.get("calibration_images"),
            "float_side": report.get("float_side", "keras"), "calibrator": report.get("calibrator"),
            "converted_from": report.get("converted_from", "keras")}  # before the backbone-file path: always the Keras model
