#!/usr/bin/env python
"""End-to-end frames per second on a video: `tledge run` vs a naive loop (issue 7, item 4).

    scripts/bench_pipeline.py                       # int8 + float32 of the default models
    scripts/bench_pipeline.py --model models/clothing-int8 --threads 2 --rounds 5
    scripts/bench_pipeline.py --quick

Three rates per model and thread count, interleaved round by round on the same video:

- ``raw``: the model call alone (set_tensor, invoke, get_tensor on a prepared input),
  1000 / mean latency: the ceiling for any loop around this model;
- ``naive``: the classic Raspberry Pi example's loop, sequential in one thread:
  cv2.VideoCapture.read -> cvtColor BGR->RGB -> cv2.resize -> set_tensor/invoke ->
  get_tensor -> argmax;
- ``tledge``: the real `tledge run MODEL --source VIDEO --display off --json` in a child
  process; its JSON lines are read from the pipe as a consumer would;
- ``pipeline``: the same `edge.pipeline.Pipeline` in this process (no JSON, no pipe).

Loop rates are steady-state: (frames - 1) / (time of the last result - time of the
first), so model loading and the first (slow) invoke count for none of them. tledge's
own final stats line (which includes its first frame) is recorded too.

The video is generated once (trainer.synthetic drawings, MJPG .avi, 640x480 by default)
under scripts/out/. Writes scripts/out/bench_pipeline.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

STATS_RE = re.compile(r"(\d+) frames in ([\d.]+) s, ([\d.]+) fps")
TLEDGE = Path(sys.executable).parent / "tledge"


def make_video(width: int, height: int, frames: int) -> Path:
    """A synthetic MJPG clip at camera resolution, written once and reused."""
    path = bc.OUT / f"pipeline_{width}x{height}_{frames}.avi"
    if not path.is_file():
        from trainer.synthetic import CLASSES, make_video as draw_video

        bc.log(f"writing {path.name}")
        per_class = -(-frames // len(CLASSES))
        tmp = path.with_name(".tmp_" + path.name)
        draw_video(tmp, frames_per_class=per_class, size=(width, height), fps=30.0)
        tmp.replace(path)
    return path


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process, all threads: robust to other
    processes' load, unlike wall time, though spinning worker threads inflate it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _interpreter(model: bc.ModelRef, threads: int) -> tuple[Any, Any]:
    """The same interpreter tledge builds (edge.runtime), and its Classifier."""
    from edge.bundle import load_model_info
    from edge.classifier import Classifier

    clf = Classifier(load_model_info(model.path, labels_path=model.labels), threads=threads)
    return clf.interpreter, clf


def raw_rate(model: bc.ModelRef, threads: int, runs: int) -> dict[str, float]:
    """Invokes per second of the model alone on a prepared input."""
    import numpy as np

    interpreter, clf = _interpreter(model, threads)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    tensor = clf.preprocess(np.zeros((480, 640, 3), np.uint8))
    times = []
    for i in range(runs + 3):
        start = time.perf_counter()
        interpreter.set_tensor(inp["index"], tensor)
        interpreter.invoke()
        interpreter.get_tensor(out["index"])
        if i >= 3:  # warm-up calls untimed
            times.append(time.perf_counter() - start)
    return {"fps": len(times) / sum(times), "p50_ms": 1000 * bc.median(times)}


def source_costs(model: bc.ModelRef, video: Path) -> dict[str, float]:
    """What each frame costs besides the model, in ms on one core: decoding a frame
    (cv2.VideoCapture.read) and tledge's preprocessing (crop + resize to the input)."""
    import cv2

    _, clf = _interpreter(model, 1)
    cap = cv2.VideoCapture(str(video))
    frames, decode = [], []
    try:
        while True:
            start = time.perf_counter()
            ok, frame_bgr = cap.read()
            if not ok:
                break
            decode.append(time.perf_counter() - start)
            if len(frames) < 50:
                frames.append(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    prep, stretch = [], []
    height, width = clf.input_size
    for frame_rgb in frames:
        start = time.perf_counter()
        clf.preprocess(frame_rgb)
        middle = time.perf_counter()
        cv2.resize(frame_rgb, (width, height))  # the naive loop's resize: stretch, INTER_LINEAR
        stretch.append(time.perf_counter() - middle)
        prep.append(middle - start)
    return {"decode_ms": 1000 * bc.median(decode), "preprocess_ms": 1000 * bc.median(prep), "naive_resize_ms": 1000 * bc.median(stretch)}


def naive_rate(model: bc.ModelRef, threads: int, video: Path) -> dict[str, float]:
    """The classic sequential loop over every frame of `video`."""
    import cv2
    import numpy as np

    interpreter, _ = _interpreter(model, threads)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    height, width = int(inp["shape"][1]), int(inp["shape"][2])
    dtype = inp["dtype"]
    cap = cv2.VideoCapture(str(video))
    stamps = []
    cpu_start = _cpu_s()
    try:
        while True:
            ok, frame_bgr = cap.read()
            if not ok:
                break
            frame_rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
            pixels = cv2.resize(frame_rgb, (width, height))
            interpreter.set_tensor(inp["index"], np.expand_dims(pixels, 0).astype(dtype, copy=False))
            interpreter.invoke()
            int(np.argmax(interpreter.get_tensor(out["index"])[0]))
            stamps.append(time.perf_counter())
    finally:
        cap.release()
    cpu_ms = 1000 * (_cpu_s() - cpu_start) / len(stamps)
    return {"fps": (len(stamps) - 1) / (stamps[-1] - stamps[0]), "frames": len(stamps), "cpu_ms_per_frame": cpu_ms}


def tledge_rate(model: bc.ModelRef, threads: int, video: Path) -> dict[str, Any]:
    """`tledge run` headless in a child process; rate of its JSON lines as they arrive."""
    cmd = [str(TLEDGE), "run", str(model.path), "--source", str(video), "--display", "off", "--json", "--threads", str(threads)]
    if model.labels:
        cmd += ["--labels", str(model.labels)]
    stamps, lines = [], []
    with tempfile.TemporaryFile("w+") as errors:  # a file, not a pipe: never blocks the child
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True, cwd=bc.ROOT)
        for line in proc.stdout or ():
            stamps.append(time.perf_counter())
            lines.append(line)
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
        errors.seek(0)
        stderr = errors.read()
    stats = STATS_RE.search(stderr)
    if proc.returncode != 0 or not stats or len(stamps) < 2:
        raise RuntimeError(f"tledge run failed (exit {proc.returncode}): {stderr.strip()[-400:]}")
    return {
        "fps": (len(stamps) - 1) / (stamps[-1] - stamps[0]), "frames": len(stamps),
        "stats_fps": float(stats.group(3)), "stats_line": stderr.strip().splitlines()[-1],
        # tledge's own per-frame latency (preprocess + invoke + postprocess), ms
        "frame_latency_ms": bc.median([json.loads(line)["latency_ms"] for line in lines[1:]]),
        "command": " ".join(["tledge", *cmd[1:]]),
    }


class _StampSink:
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def emit(self, frame_rgb: Any, result: Any) -> None:
        self.stamps.append(time.perf_counter())

    def close(self) -> None:
        pass


def inprocess_rate(model: bc.ModelRef, threads: int, video: Path) -> dict[str, float]:
    """edge.pipeline.Pipeline in this process, as `tledge run` builds it."""
    from edge.pipeline import Pipeline, PipelineOptions
    from edge.sources import open_source

    _, clf = _interpreter(model, threads)
    source: Any = open_source(str(video), model_size=clf.input_size)
    sink = _StampSink()
    cpu_start = _cpu_s()
    Pipeline(clf, source, [sink], PipelineOptions(top_k=3)).run()
    cpu_ms = 1000 * (_cpu_s() - cpu_start) / len(sink.stamps)
    return {"fps": (len(sink.stamps) - 1) / (sink.stamps[-1] - sink.stamps[0]), "cpu_ms_per_frame": cpu_ms}


def benchmark(models: list[bc.ModelRef], thread_counts: list[int], video: Path, rounds: int, raw_runs: int) -> list[dict[str, Any]]:
    runs: dict[tuple[str, int], dict[str, list[Any]]] = {}
    for r in range(rounds):
        for model in models:
            for threads in thread_counts:
                bc.log(f"round {r + 1}/{rounds}: {model.name}, {threads} thread(s)")
                slot = runs.setdefault((model.name, threads), {"raw": [], "naive": [], "tledge": [], "pipeline": [], "costs": []})
                slot["costs"].append(source_costs(model, video))
                slot["raw"].append(raw_rate(model, threads, raw_runs))
                slot["naive"].append(naive_rate(model, threads, video))
                slot["tledge"].append(tledge_rate(model, threads, video))
                slot["pipeline"].append(inprocess_rate(model, threads, video))
    rows = []
    by_name = {m.name: m for m in models}
    for (name, threads), slot in runs.items():
        raw = bc.median([x["fps"] for x in slot["raw"]])
        naive = bc.median([x["fps"] for x in slot["naive"]])
        tledge = bc.median([x["fps"] for x in slot["tledge"]])
        rows.append({
            "model": name, "mode": by_name[name].mode, "threads": threads, "rounds": len(slot["raw"]),
            "raw_invoke_fps": round(raw, 2), "raw_invoke_p50_ms": round(bc.median([x["p50_ms"] for x in slot["raw"]]), 3),
            "naive_fps": round(naive, 2), "tledge_fps": round(tledge, 2),
            "tledge_stats_fps": bc.median([x["stats_fps"] for x in slot["tledge"]]),
            "naive_cpu_ms_per_frame": round(bc.median([x["cpu_ms_per_frame"] for x in slot["naive"]]), 2),
            "pipeline_cpu_ms_per_frame": round(bc.median([x["cpu_ms_per_frame"] for x in slot["pipeline"]]), 2),
            "tledge_frame_latency_ms": round(bc.median([x["frame_latency_ms"] for x in slot["tledge"]]), 3),
            "pipeline_inprocess_fps": round(bc.median([x["fps"] for x in slot["pipeline"]]), 2),
            "tledge_vs_raw": round(tledge / raw, 3), "tledge_vs_naive": round(tledge / naive, 3),
            "frames": slot["tledge"][0]["frames"], "tledge_command": slot["tledge"][0]["command"],
            "decode_ms": round(bc.median([x["decode_ms"] for x in slot["costs"]]), 3),
            "preprocess_ms": round(bc.median([x["preprocess_ms"] for x in slot["costs"]]), 3),
            "naive_resize_ms": round(bc.median([x["naive_resize_ms"] for x in slot["costs"]]), 3),
            "per_round": {k: [round(x["fps"], 2) for x in v] for k, v in slot.items() if k != "costs"},
        })
    return rows


def paired(row: dict[str, Any], other: str) -> tuple[float, int, int]:
    """Median over rounds of tledge / `other` measured in the same round (seconds apart,
    so slow swings of the machine's load cancel), and in how many rounds tledge was ahead."""
    rounds = row.get("per_round", {})
    ratios = [t / o for t, o in zip(rounds.get("tledge", []), rounds.get(other, [])) if o]
    if not ratios:
        return row[f"tledge_vs_{other}"], 0, 0
    return bc.median(ratios), sum(r > 1.0 for r in ratios), len(ratios)


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Judged on the per-round paired ratios (see `paired`)."""
    raw = {id(r): paired(r, "raw") for r in rows}
    naive = {id(r): paired(r, "naive") for r in rows}
    raw_ok = [raw[id(r)][0] >= 0.95 for r in rows]
    naive_ok = [naive[id(r)][0] > 1.0 for r in rows]
    detail = "; ".join(
        f"{r['model']} {r['threads']}t: tledge/raw {100 * raw[id(r)][0]:.0f}%, tledge/naive x{naive[id(r)][0]:.2f} "
        f"(tledge ahead in {naive[id(r)][1]} of {naive[id(r)][2]} rounds)"
        for r in rows
    )
    detail = f"median of per-round ratios: {detail}"
    return [
        {"goal": "tledge run >= 95% of the raw invoke rate", "met": all(raw_ok) if rows else None,
         "met_in": f"{sum(raw_ok)} of {len(rows)} configurations", "detail": detail},
        {"goal": "tledge run faster than the naive loop", "met": all(naive_ok) if rows else None,
         "met_in": f"{sum(naive_ok)} of {len(rows)} configurations", "detail": detail},
    ]


def _pick(models: list[bc.ModelRef], modes: list[str]) -> list[bc.ModelRef]:
    chosen = [m for m in models if m.mode in modes]
    return chosen or models[:1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], help="A bundle, .tflite, or folder of them (repeatable). Default: the int8 and float32 of the default models.")
    parser.add_argument("--modes", default="int8,float32", help="With the default models: which quantization modes to run.")
    parser.add_argument("--threads", default="1,2", help="Interpreter thread counts, comma-separated (2 = tledge's default here).")
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds (short ones spread load bursts evenly).")
    parser.add_argument("--frames", type=int, default=300, help="Frames in the generated video.")
    parser.add_argument("--size", default="640x480", help="Video frame size WIDTHxHEIGHT.")
    parser.add_argument("--video", type=Path, help="Use this video instead of generating one.")
    parser.add_argument("--raw-runs", type=int, default=150, help="Invokes timed for the raw rate per round.")
    parser.add_argument("--quick", action="store_true", help="1 round on a 160-frame video: a smoke run.")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.frames, args.raw_runs = 1, 160, 30
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    video = args.video or make_video(width, height, args.frames)
    models = bc.expand_models(args.model) if args.model else _pick(bc.default_models(), args.modes.split(","))
    thread_counts = [int(t) for t in args.threads.split(",")]
    rows = benchmark(models, thread_counts, video, args.rounds, args.raw_runs)
    result = {
        **bc.stamp(),
        "settings": {"rounds": args.rounds, "threads": thread_counts, "video": str(video.relative_to(bc.ROOT) if video.is_relative_to(bc.ROOT) else video), "size": f"{width}x{height}", "raw_runs": args.raw_runs},
        "results": rows,
        "goals": goals(rows),
    }
    bc.write_json("bench_pipeline", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
