"""Fine-tuning on cached activations, measured: before/after, export fidelity, epoch cost.

1. `tledge train DATA` (head only) and `tledge train DATA --fine-tune auto`, each a fresh
   process with an empty cache (the cache pass included in the wall time); val and test
   accuracy with their 95 % Wilson intervals. Test is evaluated once per run, after
   selection on val.
2. `tledge export RUN --quantize` of the fine-tuned run: int8 drop and top-1 agreement
   (val + test) with intervals, measured by the edge runtime on the exported file.
3. The cost of one fine-tuning epoch on cached activations vs a full forward/backward
   pass of the classifier on pixels (same trainable blocks, same batch size), timed side
   by side over the same number of steps (median of `--repeat` rounds) and scaled to
   the training set.

    .venv/bin/python scripts/bench_fine_tune.py ../shared/datasets/clothing-small --weights PATH

Writes scripts/results/bench_fine_tune.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_common import log, median, stamp  # noqa: E402

RESULTS = ROOT / "scripts" / "results"
TLEDGE = [str(Path(sys.executable).parent / "tledge")]  # the venv's console script


def _run(args: list[str], env: dict[str, str]) -> tuple[dict, float, float, float]:
    """Run tledge with --json; (parsed stdout, wall s, child CPU s, load average at start)."""
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tick = time.perf_counter()
    done = subprocess.run(TLEDGE + args, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - tick
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"tledge {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(done.stdout.strip().splitlines()[-1]), round(wall, 1), round(cpu, 1), round(load, 2)


def _train(data: Path, out: Path, extra: list[str], weights: str | None) -> dict:
    env = {**os.environ, "TLEDGE_CACHE": tempfile.mkdtemp(prefix="tledge-bench-cache-"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = ["train", str(data), "--out", str(out), "--json", *extra] + (["--weights", weights] if weights else [])
    log(f"tledge {' '.join(args)}")
    try:
        summary, wall, cpu, load = _run(args, env)
    finally:
        shutil.rmtree(env["TLEDGE_CACHE"], ignore_errors=True)
    run_dir = Path(summary["run_dir"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "args": args[1:], "wall_s": wall, "cpu_s": cpu, "load_avg_1m": load, "run_dir": str(run_dir),
        "val": metrics["val"]["accuracy_interval"], "test": metrics["test"]["accuracy_interval"],
        "fine_tune": metrics.get("fine_tune"), "timings": metrics.get("timings"), "features": metrics.get("features"),
    }


def _export(run_dir: str, out: Path) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = ["export", run_dir, "--quantize", "--out", str(out), "--json"]
    log(f"tledge {' '.join(args)}")
    report, wall, cpu, load = _run(args, env)
    keep = ("float_accuracy", "tflite_accuracy", "top1_agreement", "drop_points", "images",
            "float_accuracy_interval", "tflite_accuracy_interval", "top1_agreement_interval")
    return {
        "wall_s": wall, "cpu_s": cpu, "load_avg_1m": load, "passed": report.get("passed"), "drop_points": report.get("drop_points"),
        "splits": {name: {k: row.get(k) for k in keep} for name, row in report["splits"].items()},
        "model_size_bytes": report.get("model_size_bytes"),
    }


def _epoch_cost(run_dir: str, data: Path, steps: int, repeat: int, weights: str | None) -> dict:
    """Seconds per training step: top on cached activations vs the whole classifier on pixels."""
    import numpy as np

    import keras
    import tensorflow as tf

    from edge.images import load_rgb
    from edge.preprocess import resize_rgb
    from trainer import cut as cut_lib
    from trainer import model as model_lib
    from trainer.config import Backbone, FineTuneOptions, ModelOptions
    from trainer.dataset import scan

    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    blocks = metrics["fine_tune"]["blocks"]
    classifier = keras.saving.load_model(Path(run_dir) / "model.keras", compile=False)
    options = ModelOptions()
    batch = FineTuneOptions().batch_size
    dataset = scan(data, seed=42)
    train = dataset.splits["train"]
    pick = train[: batch * 2]
    pixels = np.stack([resize_rgb(load_rgb(s.path), (options.image_size,) * 2, options.resize) for s in pick]).astype(np.float32)
    labels = keras.utils.to_categorical([s.label for s in pick], len(dataset.labels))
    backbone = classifier.get_layer(model_lib.BACKBONE_NAME)
    halves = cut_lib.split(classifier, cut_lib.choose_cut(backbone, Backbone.MOBILENET_V2, blocks))
    acts = np.asarray(halves.bottom(pixels, training=False))
    cut_lib.set_trainable(halves, True)

    def stepper(model: object, x: np.ndarray) -> object:
        optimizer = keras.optimizers.Adam(1e-5)
        loss_fn = keras.losses.CategoricalCrossentropy()

        @tf.function
        def step(xb: tf.Tensor, yb: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            grads = tape.gradient(loss, model.trainable_weights)
            optimizer.apply_gradients(zip(grads, model.trainable_weights))
            return loss

        def run(n: int) -> float:
            tick = time.perf_counter()
            for i in range(n):
                j = (i % 2) * batch
                step(tf.constant(x[j : j + batch]), tf.constant(labels[j : j + batch])).numpy()
            return time.perf_counter() - tick

        run(1)  # trace and warm up
        return run

    # Both measure the same trainable weights: the blocks above the cut and the head.
    top_run, full_run = stepper(halves.top, acts), stepper(classifier, pixels)
    top_s, full_s, loads = [], [], []
    for _ in range(repeat):  # interleaved, so load changes hit both alike
        loads.append(round(os.getloadavg()[0], 2))
        top_s.append(top_run(steps) / steps)
        full_s.append(full_run(steps) / steps)
    rows = metrics["fine_tune"]["rows"]
    per_epoch = lambda s: round(s * rows / batch, 1)  # noqa: E731
    return {
        "blocks": blocks, "batch": batch, "steps_per_round": steps, "rounds": repeat, "train_rows_per_epoch": rows,
        "top_step_s_median": round(median(top_s), 4), "full_step_s_median": round(median(full_s), 4),
        "top_epoch_s": per_epoch(median(top_s)), "full_epoch_s": per_epoch(median(full_s)),
        "ratio_full_over_top": round(median(full_s) / median(top_s), 2), "load_avg_1m": loads,
        "measured_epoch_s_in_run": metrics["fine_tune"].get("epoch_s"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--steps", type=int, default=6, help="training steps per round in the epoch-cost comparison")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-head-only", action="store_true")
    parser.add_argument("--output", default="bench_fine_tune")
    args = parser.parse_args()
    result = {**stamp(), "data_dir": str(args.data_dir)}
    out = Path(tempfile.mkdtemp(prefix="tledge-bench-ft-"))
    path = RESULTS / f"{args.output}.json"

    def save() -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, path)

    result["fine_tuned"] = _train(args.data_dir, out / "runs", ["--fine-tune", "auto"], args.weights)
    save()
    if not args.skip_head_only:
        result["head_only"] = _train(args.data_dir, out / "runs", [], args.weights)
        save()
    result["export_int8"] = _export(result["fine_tuned"]["run_dir"], out / "models")
    save()
    result["epoch_cost"] = _epoch_cost(result["fine_tuned"]["run_dir"], args.data_dir, args.steps, args.repeat, args.weights)
    result["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    save()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
