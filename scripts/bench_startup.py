#!/usr/bin/env python
"""Start-up time and peak memory of the edge process (issue 7, item 5).

    scripts/bench_startup.py                        # the default int8 model, 7 repetitions
    scripts/bench_startup.py --model models/clothing-int8 --image photo.jpg --reps 9
    scripts/bench_startup.py --quick

Each measurement is a fresh process. The clock starts in this (parent) process just
before the child is spawned, so the interpreter start, every import, loading the model,
decoding the image and the first invoke are inside it; it stops when the child's first
result line arrives on its stdout. Peak RSS is the child's own `ru_maxrss` from
`os.wait4` (the high-water mark of resident memory, the whole process).

Variants, interleaved repetition by repetition (after one untimed warm-up each, so the
page cache is warm for all alike):

- ``tledge``: `tledge predict MODEL IMAGE --json` (the installed command);
- ``litert``: a minimal script with ai-edge-litert's Interpreter: cv2 decode, centre
  crop + resize (as tledge), invoke, print the top class (what tledge adds on top is the
  difference to this);
- ``tensorflow``: the same minimal script with `tf.lite.Interpreter` (TensorFlow imported).

Writes scripts/out/bench_startup.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

TLEDGE = Path(sys.executable).parent / "tledge"

# The minimal script, identical for both interpreters except the import line.
_MINIMAL = """
import sys, json
{import_line}
import cv2, numpy as np
model, image, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
interpreter = Interpreter(model_path=model, num_threads=threads)
interpreter.allocate_tensors()
inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
frame_rgb = cv2.cvtColor(cv2.imread(image), cv2.COLOR_BGR2RGB)
h, w = int(inp["shape"][1]), int(inp["shape"][2])
side_h, side_w = (frame_rgb.shape[0], round(frame_rgb.shape[0] * w / h)) if frame_rgb.shape[1] * h > frame_rgb.shape[0] * w else (round(frame_rgb.shape[1] * h / w), frame_rgb.shape[1])
top, left = (frame_rgb.shape[0] - side_h) // 2, (frame_rgb.shape[1] - side_w) // 2
pixels = cv2.resize(frame_rgb[top:top + side_h, left:left + side_w], (w, h), interpolation=cv2.INTER_AREA)
interpreter.set_tensor(inp["index"], pixels[None].astype(inp["dtype"]))
interpreter.invoke()
scores = interpreter.get_tensor(out["index"])[0]
print(json.dumps({{"index": int(np.argmax(scores))}}), flush=True)
"""
IMPORTS = {
    "litert": "from ai_edge_litert.interpreter import Interpreter",
    "tensorflow": "import tensorflow as tf; Interpreter = tf.lite.Interpreter",
}


def commands(model: bc.ModelRef, image: Path, threads: int) -> dict[str, list[str]]:
    tledge = [str(TLEDGE), "predict", str(model.path), str(image), "--json", "--threads", str(threads)]
    if model.labels:
        tledge += ["--labels", str(model.labels)]
    cmds = {"tledge": tledge}
    for name, line in IMPORTS.items():
        cmds[name] = [sys.executable, "-c", _MINIMAL.format(import_line=line), str(model.tflite), str(image), str(threads)]
    return cmds


def measure(cmd: list[str]) -> tuple[dict[str, Any], float]:
    """One fresh process: seconds to its first stdout line, and its peak RSS in MiB
    (the child is reaped with os.wait4, which returns its own ru_maxrss)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryFile("w+") as errors:  # a file, not a pipe: never blocks the child
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True, cwd=bc.ROOT, env=env)
        stdout = proc.stdout
        first = stdout.readline() if stdout else ""
        first_s = time.perf_counter() - start
        if stdout:
            stdout.read()
            stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        stderr = errors.read().strip()[-400:]
    run = {"first_result_s": first_s, "line": first.strip(), "rc": proc.returncode, "stderr": stderr,
           "cpu_s": usage.ru_utime + usage.ru_stime}  # the whole process, exit included
    return run, usage.ru_maxrss / 1024.0  # KiB -> MiB


def benchmark(cmds: dict[str, list[str]], reps: int) -> dict[str, Any]:
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in cmds}
    for name, cmd in cmds.items():  # warm-up: page cache, .pyc files
        run, _ = measure(cmd)
        if run["rc"] != 0 or not run["line"]:
            raise RuntimeError(f"{name} failed (exit {run['rc']}): {run['stderr']}")
    for r in range(reps):
        bc.log(f"repetition {r + 1}/{reps}")
        for name, cmd in cmds.items():
            run, rss = measure(cmd)
            samples[name].append({"first_result_s": run["first_result_s"], "cpu_s": run["cpu_s"], "line": run["line"], "rc": run["rc"], "peak_rss_mb": rss})
    return samples


def _top_index(line: str) -> int | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record.get("index", (record.get("top") or [{}])[0].get("index"))


def import_profile(model: bc.ModelRef, image: Path) -> list[dict[str, Any]]:
    """The slowest top-level imports of `tledge predict` (python -X importtime), ms."""
    code = "import sys; from edge.cli import main; sys.argv[0] = 'tledge'; main()"
    cmd = [sys.executable, "-X", "importtime", "-c", code, "predict", str(model.path), str(image), "--json"]
    if model.labels:
        cmd += ["--labels", str(model.labels)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=bc.ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[0].startswith("import time:") and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            if not name.startswith("  "):  # depth 1: imported by the program itself
                rows.append({"module": name.strip(), "cumulative_ms": round(int(parts[1]) / 1000.0, 1)})
    return sorted(rows, key=lambda r: -r["cumulative_ms"])[:8]


def summarize(samples: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for name, runs in samples.items():
        first = [s["first_result_s"] for s in runs]
        rss = [s["peak_rss_mb"] for s in runs]
        rows.append({
            "variant": name, "reps": len(runs),
            "first_result_s_median": round(bc.median(first), 3), "first_result_s_min": round(min(first), 3), "first_result_s_max": round(max(first), 3),
            "cpu_s_median": round(bc.median([s["cpu_s"] for s in runs]), 3),
            "peak_rss_mb_median": round(bc.median(rss), 1), "peak_rss_mb_max": round(max(rss), 1),
            "first_line": runs[0]["line"][:200],
            "top1_index": _top_index(runs[0]["line"]),
        })
    return rows


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {r["variant"]: r for r in rows}
    t, tf = by.get("tledge"), by.get("tensorflow")
    if not t:
        return []
    versus = f" (TensorFlow: {tf['first_result_s_median']:.2f} s, {tf['peak_rss_mb_median']:.0f} MB)" if tf else ""
    return [
        {"goal": "< 1 s from process start to the first result", "met": t["first_result_s_median"] < 1.0,
         "detail": f"tledge predict: median {t['first_result_s_median']:.2f} s (min {t['first_result_s_min']:.2f}, max {t['first_result_s_max']:.2f}; "
                   f"CPU time of the whole process {t['cpu_s_median']:.2f} s){versus}"},
        {"goal": "< 150 MB peak RSS", "met": t["peak_rss_mb_median"] < 150.0,
         "detail": f"tledge predict: median {t['peak_rss_mb_median']:.0f} MB (max {t['peak_rss_mb_max']:.0f}){versus}"},
    ]


def default_image(model: bc.ModelRef) -> Path:
    if model.labels == bc.GOOGLE_LABELS:
        return bc.SHARED / "images" / "chelsea.png"
    test = bc.SHARED / "datasets" / "clothing-small" / "test"
    found = sorted(test.glob("*/*.jpg"))[:1] if test.is_dir() else []
    return found[0] if found else bc.SHARED / "images" / "chelsea.png"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], help="A bundle or .tflite (the first one is used). Default: the int8 of the default models.")
    parser.add_argument("--image", type=Path, help="Image to classify (default: a clothing-small test photo, or chelsea.png for Google's model).")
    parser.add_argument("--threads", type=int, default=2, help="Interpreter threads in every variant.")
    parser.add_argument("--reps", type=int, default=7, help="Timed repetitions per variant (interleaved).")
    parser.add_argument("--no-tensorflow", action="store_true", help="Skip the TensorFlow variant (where it is not installed).")
    parser.add_argument("--quick", action="store_true", help="2 repetitions: a smoke run.")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps = 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.model:
        model = bc.expand_models(args.model)[0]
    else:
        models = bc.default_models()
        model = next((m for m in models if m.mode == "int8"), models[0])
    image = args.image or default_image(model)
    cmds = commands(model, image, args.threads)
    if args.no_tensorflow:
        del cmds["tensorflow"]
    rows = summarize(benchmark(cmds, args.reps))
    imports = import_profile(model, image)
    result = {
        **bc.stamp(),
        "settings": {"model": str(model.path), "mode": model.mode, "image": str(image), "threads": args.threads, "reps": args.reps},
        "commands": {name: " ".join(cmd[:2] + ["<minimal script>"] + cmd[3:] if name != "tledge" else ["tledge", *cmd[1:]]) for name, cmd in cmds.items()},
        "results": rows,
        "same_top1": len({r["top1_index"] for r in rows}) == 1,
        "tledge_imports": imports,
        "goals": goals(rows),
    }
    bc.write_json("bench_startup", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
