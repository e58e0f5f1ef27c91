"""`tledge demo`: the main job end to end on built-in data.

procedural dataset -> train -> export int8 (verified against the float model) ->
classify a generated video with the edge runtime -> a short summary.

ImageNet weights come from --weights / $TLEDGE_WEIGHTS / the Keras cache / Keras'
download; when none can be had, the demo says so and goes on with a random backbone,
and the summary says so too.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from edge.bundle import load_model_info
from edge.classifier import Classifier
from edge.pipeline import Pipeline, PipelineOptions
from edge.sinks import ResultListSink
from edge.sources import open_source
from trainer import synthetic
from trainer.config import DataOptions, HyperParams, ModelOptions, RuntimeOptions, TrainOptions, WeightsSpec
from trainer.export import export
from trainer.export.options import ExportOptions
from trainer.progress import Reporter


@dataclass(frozen=True)
class DemoOptions:
    """What the demo builds and where."""

    work_dir: Path = Path("runs/demo")
    weights: str | None = None  # --weights value; None: $TLEDGE_WEIGHTS, else imagenet
    image_size: int = 96  # pixels; MobileNetV2 1.0 at 96 px keeps the demo under a few minutes
    images_per_class: int = 80  # train; val and test get a quarter each
    seed: int = 0
    quiet: bool = False


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Run every step; return the summary as a dict (also printed by the CLI)."""
    reporter = Reporter(quiet=options.quiet)
    start = time.perf_counter()
    work = options.work_dir
    data_dir = work / "data"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    per = options.images_per_class
    reporter.info(f"[1/4] drawing a dataset: {len(synthetic.CLASSES)} classes x {per} train images -> {data_dir}")
    synthetic.make_dataset(
        data_dir, size=128, seed=options.seed, splits={"train": per, "val": max(4, per // 4), "test": max(4, per // 4)}
    )

    reporter.info("[2/4] training (frozen MobileNetV2 + new head)")
    train_options = TrainOptions(
        data=DataOptions(data_dir=data_dir),
        model=ModelOptions(image_size=options.image_size, weights=WeightsSpec.parse(options.weights), allow_random_backbone=True),
        hyper=HyperParams(),
        runtime=RuntimeOptions(quiet=options.quiet),
        out_dir=work / "runs",
        name="demo",
        seed=options.seed,
    )
    trained = _train(train_options)

    reporter.info("[3/4] exporting int8 and verifying it against the float model")
    bundle_dir = work / "bundle"
    exported = export(trained.run_dir, ExportOptions.for_int8(out=bundle_dir, force=True, accept_drop=True))

    reporter.info("[4/4] classifying a generated video with the edge runtime")
    video, truth = synthetic.make_video(work / "clip.avi", frames_per_class=30, size=(320, 240), seed=options.seed + 7)
    info = load_model_info(bundle_dir)
    classifier = Classifier(info)
    sink = ResultListSink()
    stats = Pipeline(classifier, open_source(str(video)), [sink], PipelineOptions(top_k=1)).run()
    correct = sum(1 for r in sink.results if r.index < len(truth) and r.top and r.top[0][1] == truth[r.index])

    test = exported.report.get("splits", {}).get("test", {})
    return {
        "weights": trained.weights,
        "random_backbone": trained.weights.startswith("random") or trained.weights == "none",
        "classes": list(trained.labels),
        "train_wall_s": round(trained.wall_s, 1),
        "float_test_accuracy": test.get("float_accuracy"),
        "int8_test_accuracy": test.get("tflite_accuracy"),
        "top1_agreement": test.get("top1_agreement"),
        "test_images": int(test.get("images") or 0),
        "int8_size_kb": round(exported.model_path.stat().st_size / 1024, 1),
        "video_frames": stats.frames,
        "video_accuracy": round(correct / max(1, stats.frames), 4),
        "video_correct": correct,
        "video_fps": round(stats.fps, 1),
        "latency_p50_ms": round(stats.latency_p50_ms, 2),
        "run_dir": str(Path(trained.run_dir).resolve()),
        "bundle": str(bundle_dir.resolve()),
        "total_wall_s": round(time.perf_counter() - start, 1),
    }


def _train(options: TrainOptions) -> Any:
    from trainer.train import train

    return train(options)


def shown_path(path: str | Path, cwd: Path | None = None) -> str:
    """`path` as the summary prints it: relative to the current directory when it lies below
    it (or beside it, one `..` up), so a pasted summary does not carry this machine's layout;
    absolute otherwise. The --json summary keeps absolute paths."""
    target = Path(path).resolve()
    here = (cwd or Path.cwd()).resolve()
    if target.is_relative_to(here):
        return str(target.relative_to(here))
    if here.parent != Path(here.anchor) and target.is_relative_to(here.parent):
        return str(Path("..") / target.relative_to(here.parent))
    return str(target)


def summary_lines(summary: dict[str, Any], cwd: Path | None = None) -> list[str]:
    """The demo's closing lines, for people; paths relative to `cwd` (the current directory)."""

    from trainer.stats import format_accuracy

    n_test = summary.get("test_images")

    def acc(value: Any, n: int | None) -> str:
        """With its 95 % Wilson interval and n (a demo's test split is small)."""
        return format_accuracy(None if value is None else float(value), n)

    weights = summary["weights"]
    backbone = f"ImageNet weights ({shown_path(weights, cwd) if weights.endswith('.h5') else weights})"
    if summary["random_backbone"]:
        backbone = "RANDOM backbone - no ImageNet weights could be had; accuracy is not representative"
    return [
        "tledge demo summary",
        f"  backbone        {backbone}",
        f"  classes         {', '.join(summary['classes'])}",
        f"  test accuracy   float {acc(summary['float_test_accuracy'], n_test)}   int8 {acc(summary['int8_test_accuracy'], n_test)}",
        f"  top-1 agreement {acc(summary['top1_agreement'], n_test)} (int8 vs float, test)",
        f"  int8 model      {summary['int8_size_kb']} KB, p50 latency {summary['latency_p50_ms']} ms",
        f"  video           {acc(summary['video_accuracy'], summary['video_frames'])} of frames correct, {summary['video_fps']} fps",
        f"  bundle          {shown_path(summary['bundle'], cwd)}",
        f"  training run    {shown_path(summary['run_dir'], cwd)}  ({summary['train_wall_s']} s)",
        f"  total           {summary['total_wall_s']} s",
    ]


__all__ = ["DemoOptions", "run_demo", "shown_path", "summary_lines"]
