#!/usr/bin/env python
"""Soak test: run the real edge pipeline over a looping video for many frames and check
that memory and open file descriptors stay flat.

    scripts/soak.py                        # 20,000 frames: tiny generated bundle + Google's model
    scripts/soak.py --frames 50000 --model models/clothing-small
    scripts/soak.py --model tiny --frames 3000 --warmup 500

The video is generated with OpenCV (trainer.synthetic.make_video, MJPG AVI) and played
with `loop=True`, so the source is closed and reopened at every end: a leak per reopen
shows up as descriptor or memory growth. Sinks: JSON lines (to /dev/null), a CSV log
(a real, growing file) and the overlay drawing of the window sink (no window needed).

RSS and descriptors are sampled inside the run: the start values after `--warmup`
frames (allocator and interpreter caches settled), the end values at the last frame.
Each model runs in a fresh child process. Prints JSON (per run: frames, rss_start_mb,
rss_end_mb, fds_start, fds_end, seconds, ...; goals; a markdown table that
scripts/benchmarks.py puts in BENCHMARKS.md) and writes scripts/out/soak.json. Exit code
1 when RSS grows by `--max-rss-growth-mb` or more, or the descriptor count grows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "scripts" / "out"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Resident set size of this process, MB (from /proc: cheap enough per sample)."""
    with open("/proc/self/statm", "rb") as stream:
        return int(stream.read().split()[1]) * PAGE_BYTES / 1e6


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


@dataclass
class Sample:
    frame: int
    rss_mb: float
    fds: int
    threads: int


@dataclass
class ProbeSink:
    """A sink that samples RSS / descriptors / threads every `every` frames and draws the
    overlay the window sink would show (the drawing work of a device with a screen)."""

    every: int
    warmup: int
    samples: list[Sample] = field(default_factory=list)
    frames: int = 0
    start: Sample | None = None
    last: Sample | None = None

    def emit(self, frame_rgb: np.ndarray, result: Any) -> None:
        from edge.sinks import draw_overlay

        draw_overlay(frame_rgb, result)
        self.frames += 1
        if self.frames == self.warmup or self.frames % self.every == 0:
            sample = Sample(self.frames, round(rss_mb(), 2), open_fds(), threads())
            self.samples.append(sample)
            if self.frames == self.warmup:
                self.start = sample
            self.last = sample

    def close(self) -> None:
        pass


def tiny_bundle(folder: Path) -> Path:
    """A small real image classifier (converted with TensorFlow) in tledge bundle layout.

    Made in a child process, so this process stays as TensorFlow-free as a device.
    """
    code = (
        "import sys; sys.path[:0] = [sys.argv[2]]; from pathlib import Path; "
        "from tiny_models import image_classifier_tflite, write_bundle; from trainer.synthetic import CLASSES; "
        "write_bundle(Path(sys.argv[1]), image_classifier_tflite(len(CLASSES), 96), list(CLASSES))"
    )
    subprocess.run([sys.executable, "-c", code, str(folder), str(ROOT / "tests" / "reliability")], check=True, capture_output=True, timeout=600)
    return folder


def compact_json(report: dict[str, Any]) -> str:
    """Indented JSON with each sample on one line."""
    text = json.dumps(report, indent=2)
    return re.sub(r"\[\s+([-\d.,\s]+?)\s+\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text)


def soak(model: Path, labels: Path | None, frames: int, warmup: int, every: int, video_frames_per_class: int, threads_n: int) -> dict[str, Any]:
    """Run the pipeline for `frames` frames; return the report."""
    from edge.bundle import load_model_info
    from edge.classifier import Classifier
    from edge.pipeline import Pipeline, PipelineOptions
    from edge.sinks import CsvSink, JsonLinesSink
    from edge.sources import VideoFileSource
    from trainer.synthetic import make_video

    work = Path(tempfile.mkdtemp(prefix="tledge-soak-"))
    video, _ = make_video(work / "loop.avi", frames_per_class=video_frames_per_class, size=(320, 240))
    clf = Classifier(load_model_info(model, labels_path=labels), threads=threads_n)
    fds_before, rss_before = open_fds(), rss_mb()
    probe = ProbeSink(every=every, warmup=warmup)
    with open(os.devnull, "w", encoding="utf-8") as devnull:
        sinks = [JsonLinesSink(devnull), CsvSink(work / "log.csv"), probe]
        source = VideoFileSource(video)
        options = PipelineOptions(top_k=3, smooth=5, loop=True, max_frames=frames)
        started = time.monotonic()
        stats = Pipeline(clf, source, sinks, options).run()
        seconds = time.monotonic() - started
    start, end = probe.start, probe.last
    if start is None or end is None:
        raise SystemExit(f"the run ended after {probe.frames} frames ({stats.reason}); raise --frames above --warmup")
    csv_bytes = (work / "log.csv").stat().st_size
    for path in work.iterdir():
        path.unlink()
    work.rmdir()
    return {
        "frames": stats.frames,
        "model": str(model),
        "video": {"frames_per_loop": video_frames_per_class * 4, "size": "320x240", "codec": "MJPG"},
        "loops": stats.frames // (video_frames_per_class * 4),
        "warmup_frames": warmup,
        "rss_before_mb": round(rss_before, 2),
        "rss_start_mb": start.rss_mb,
        "rss_end_mb": end.rss_mb,
        "rss_growth_mb": round(end.rss_mb - start.rss_mb, 2),
        "rss_max_mb": max(s.rss_mb for s in probe.samples),
        "fds_before": fds_before,
        "fds_start": start.fds,
        "fds_end": end.fds,
        "fds_after_close": open_fds(),
        "threads_start": start.threads,
        "threads_end": end.threads,
        "threads_growth": thread_growth(probe.samples),
        "seconds": round(seconds, 1),
        "fps": round(stats.frames / seconds, 1) if seconds else 0.0,
        "latency_p50_ms": round(stats.latency_p50_ms, 2),
        "latency_p90_ms": round(stats.latency_p90_ms, 2),
        "csv_log_bytes": csv_bytes,
        "reason": stats.reason,
        "samples": [[s.frame, s.rss_mb, s.fds, s.threads] for s in probe.samples],
    }


def thread_growth(samples: list[Sample]) -> int:
    """Most threads in the second half of the samples minus most in the first half.

    Maxima, not single samples: the video decoder's thread exists only between a reopen
    and its first read, so a sample that lands on a loop boundary counts one fewer."""
    half = max(1, len(samples) // 2)
    first, second = samples[:half], samples[half:] or samples[-1:]
    return max(s.threads for s in second) - max(s.threads for s in first)


GOOGLE_MODEL = ROOT.parent / "shared" / "models" / "mobilenet_v2_1.0_224_quant.tflite"
TINY = "tiny"


def run_one(model: str, args: argparse.Namespace) -> dict[str, Any]:
    """Soak one model in a fresh child process (so one run's memory cannot hide another's)."""
    with tempfile.TemporaryDirectory(prefix="tledge-soak-") as scratch:
        out = Path(scratch) / "one.json"
        cmd = [sys.executable, __file__, "--single", "--model", model, "--frames", str(args.frames), "--warmup", str(args.warmup),
               "--every", str(args.every), "--threads", str(args.threads), "--video-frames-per-class", str(args.video_frames_per_class),
               "--out", str(out)] + (["--labels", str(args.labels)] if args.labels else [])
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, timeout=None)
        if done.returncode != 0 or not out.is_file():
            raise SystemExit(f"the soak of {model} failed (exit {done.returncode})")
        return json.loads(out.read_text())


def single(args: argparse.Namespace) -> dict[str, Any]:
    """The child's work: one model, in this process."""
    model = str(args.model[0])
    scratch = None
    path = Path(model)
    if model == TINY:
        scratch = Path(tempfile.mkdtemp(prefix="tledge-soak-model-"))
        path = tiny_bundle(scratch / "tiny")
    try:
        report = soak(path, args.labels, args.frames, args.warmup, args.every, args.video_frames_per_class, args.threads)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    report["model"] = "tiny generated bundle (96 px, 4 classes)" if model == TINY else _shown(path)
    return report


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), ROOT)
    except ValueError:
        return str(path)


def goals(runs: list[dict[str, Any]], max_growth_mb: float) -> list[dict[str, Any]]:
    worst = max(runs, key=lambda r: r["rss_growth_mb"])
    fds_ok = all(r["fds_end"] <= r["fds_start"] and r["fds_after_close"] <= r["fds_before"] for r in runs)
    return [
        {"goal": f"RSS growth < {max_growth_mb:g} MB over {runs[0]['frames']:,} frames", "met": worst["rss_growth_mb"] < max_growth_mb,
         "detail": f"largest growth {worst['rss_growth_mb']:+.2f} MB ({worst['model']})"},
        {"goal": "no open-descriptor growth", "met": fds_ok,
         "detail": "; ".join(f"{r['model']}: {r['fds_start']} -> {r['fds_end']} in the run, {r['fds_before']} -> {r['fds_after_close']} around it" for r in runs)},
        {"goal": "no thread growth (most threads in the second half of the samples <= most in the first)",
         "met": all(r["threads_growth"] <= 0 for r in runs),
         "detail": "; ".join(f"{r['model']}: {r['threads_growth']:+d}" for r in runs)},
    ]


def markdown(runs: list[dict[str, Any]], every: int) -> str:
    rows = [
        f"| {r['model']} | {r['frames']:,} | {r['loops']} | {r['seconds']:.0f} | {r['fps']:.0f} | {r['rss_start_mb']:.1f} -> {r['rss_end_mb']:.1f} "
        f"(**{r['rss_growth_mb']:+.2f}**) | {r['rss_max_mb']:.1f} | {r['fds_start']} -> {r['fds_end']} | {r['fds_before']} -> {r['fds_after_close']} "
        f"| {r['threads_start']} -> {r['threads_end']} |"
        for r in runs
    ]
    return "\n".join([
        "`tledge`'s real pipeline (edge.pipeline with the LiteRT interpreter, JSON-lines, CSV-log and overlay-drawing sinks) "
        f"over a generated {runs[0]['video']['size']} {runs[0]['video']['codec']} video of {runs[0]['video']['frames_per_loop']} frames played "
        "with `loop=True`, so the video is closed and reopened at every end. Each model runs in its own process; RSS (MB), "
        f"open descriptors and threads are sampled inside the run, the start after {runs[0]['warmup_frames']:,} warm-up frames, "
        "the end at the last frame; \"around\" compares before the pipeline opened anything with after it closed.",
        "",
        "| model | frames | reopens | s | fps | RSS start -> end MB (growth) | RSS max MB | fds in run | fds around | threads |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Samples every {every:,} frames ([frame, RSS MB, descriptors, threads]) are in the result file (scripts/results/soak.json once cited).",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=1_000, help="frames before the start sample")
    parser.add_argument("--every", type=int, default=1_000, help="frames between samples")
    parser.add_argument("--model", action="append", default=[],
                        help=f"bundle folder or .tflite, repeatable; '{TINY}' = a tiny generated bundle "
                             "(default: tiny, and ../shared's Google model when present)")
    parser.add_argument("--labels", type=Path, help="labels file for a bare .tflite")
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads")
    parser.add_argument("--video-frames-per-class", type=int, default=15, help="4 classes: 60 frames per loop by default")
    parser.add_argument("--max-rss-growth-mb", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=OUT / "soak.json")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.frames <= args.warmup:
        parser.error("--frames must be larger than --warmup")
    if args.single:
        _write(args.out, single(args))
        return 0
    models = args.model or [TINY] + ([str(GOOGLE_MODEL)] if GOOGLE_MODEL.is_file() else [])
    runs = [run_one(model, args) for model in models]
    result = {
        "command": " ".join(["scripts/soak.py", *(argv if argv is not None else sys.argv[1:])]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"load_avg_1m": round(os.getloadavg()[0], 2)},
        "frames": args.frames,
        "runs": runs,
        "goals": goals(runs, args.max_rss_growth_mb),
    }
    result["markdown"] = markdown(runs, args.every)
    result["ok"] = all(g["met"] for g in result["goals"])
    print(compact_json(result))
    _write(args.out, result)
    return 0 if result["ok"] else 1


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(compact_json(report) + "\n", encoding="utf-8")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
