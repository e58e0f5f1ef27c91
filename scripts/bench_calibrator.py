#!/usr/bin/env python
"""int8 calibration: TensorFlow's calibrator vs LiteRT's ranges (trainer/export/calibration.py).

Two parts, each short enough for one `flock /work/bench.lock` (run them one after the other):

- ``--part calibration``: on the stand-in run's classifier (MobileNetV2 1.0 at 224 px, real
  ImageNet weights, the head `tledge train` fitted), the float model TensorFlow's converter
  hands its calibrator and the 64 calibration images the exporter picks. Times, per
  repeat, TensorFlow's `Calibrator.calibrate` and ours (plan + LiteRT run + writing the
  ranges), in-process, and compares the ranges they write.
- ``--part export``: `tledge export RUN --quantize` of the same run as its own process,
  alternately with TLEDGE_CALIBRATOR=tensorflow and the default (litert): wall and CPU
  seconds, the export's stages, report.json's calibrator and agreement, and how far the two
  int8 files' outputs are apart on the run's val images.

- ``--part guard``: not a timing. The run of tests/export/test_calibration_guard.py (ImageNet
  MobileNetV2 at 224 px, a head trained on 60 images per class and split of clothing-small,
  trained by that test's own helper), its 64 calibration images as the exporter picks them,
  bias correction on: int8 top-1 agreement with the float Keras model on val + test for the
  file calibrated by TensorFlow, by LiteRT, and by TensorFlow with its ranges nudged by
  relative N(0, --noise) noise (--seeds files): how far agreement moves with float-rounding-
  sized changes of the ranges alone.

The stand-in set (scripts/bench_photos_to_bundle.py's `make_standin`) and one `tledge train`
run (cold cache) are made once under --work and reused.

    .venv/bin/python scripts/bench_calibrator.py --part calibration [--repeat 3]
    .venv/bin/python scripts/bench_calibrator.py --part export [--repeat 3]
    .venv/bin/python scripts/bench_calibrator.py --part guard [--seeds 5] [--noise 1e-6]

Writes (merges its part into) scripts/results/calibrator_speed.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from timed_cli import EXPORT_MARKS, WEIGHTS, Bench, export_stages, fidelity, lscpu_model, make_standin, run_timed  # noqa: E402

RESULT = ROOT / "scripts" / "results" / "calibrator_speed.json"


def standin_run(work: Path, weights: Path) -> tuple[Path, Bench]:
    """The stand-in set and one trained run under `work` (made on first use)."""
    data = work / "data"
    if not data.is_dir():
        make_standin(data)
    bench = Bench(ROOT, data, work, weights)
    marker = work / "run_dir.txt"
    if not marker.is_file():
        row = bench.train(work / "cache", work / "runs")
        marker.write_text(row["run_dir"])
    return Path(marker.read_text().strip()), bench


def _header() -> dict[str, Any]:
    return {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": lscpu_model(), "cores": os.cpu_count(),
            "load_avg_start": [round(x, 2) for x in os.getloadavg()], "shared_machine": True}


def calibration_inputs(run_dir: Path) -> tuple[Any, Any]:
    """The run's Keras model, and its calibration images as the exporter picks and decodes them."""
    from trainer.deps import require_keras
    from trainer.export.convert import stratified_sample
    from trainer.export.decoding import BackgroundDecoder
    from trainer.export.options import DEFAULT_CALIBRATION_IMAGES
    from trainer.run_dir import read_run

    run = read_run(run_dir)
    model = require_keras().models.load_model(run.model_path, compile=False)
    paths = [p for p, _ in stratified_sample(run.splits["train"], DEFAULT_CALIBRATION_IMAGES, 0)]
    with BackgroundDecoder(run.image_size, run.resize) as decoder:
        decoder.submit("calibration", paths, "Calibration")
        return model, decoder.images("calibration")


def float_model_of(conversion: Callable[[], Any]) -> bytes:
    """The float model that TensorFlow's converter hands its calibrator during `conversion()`."""
    from tensorflow.lite.python.optimize import calibrator as tf_calibrator

    captured: dict[str, bytes] = {}
    original = tf_calibrator.Calibrator

    class Capture(original):  # type: ignore[misc, valid-type]
        def __init__(self, content: bytes, *args: Any) -> None:
            captured["float"] = bytes(content)
            super().__init__(content, *args)

    tf_calibrator.Calibrator = Capture
    try:
        conversion()
    finally:
        tf_calibrator.Calibrator = original
    return captured["float"]


def part_calibration(run_dir: Path, repeat: int) -> dict[str, Any]:
    import numpy as np

    from trainer.deps import require_keras
    from trainer.export.calibration import measure_ranges, with_ranges
    from trainer.export.convert import convert, representative_images
    from trainer.export.options import CalibratorKind, IOType, QuantizationMode
    from trainer.run_dir import read_run

    require_keras()
    from tensorflow.lite.python.optimize import calibrator as tf_calibrator

    header = _header()
    run = read_run(run_dir)
    model, images = calibration_inputs(run_dir)
    samples = representative_images(images)

    # the float model exactly as the converter hands it over (no bias correction: same graph)
    content = float_model_of(lambda: convert(model, QuantizationMode.INT8, IOType.UINT8, samples, False, CalibratorKind.TENSORFLOW))

    rows: dict[str, list[float]] = {"tensorflow_s": [], "litert_s": []}
    files: dict[str, bytes] = {}
    for _ in range(repeat):
        start = time.perf_counter()
        files["tensorflow"] = bytes(tf_calibrator.Calibrator(content).calibrate(samples))  # the single pass
        rows["tensorflow_s"].append(time.perf_counter() - start)
        start = time.perf_counter()
        files["litert"] = with_ranges(content, measure_ranges(content, samples()))
        rows["litert_s"].append(time.perf_counter() - start)
    count = len(images)
    theirs, ours = _ranges(files["tensorflow"]), _ranges(files["litert"])
    rel = [max(abs(ours[i][0] - lo), abs(ours[i][1] - hi)) / (hi - lo) for i, (lo, hi) in theirs.items() if hi > lo]
    exact = sum(ours[i] == theirs[i] for i in theirs)
    result = {
        **header,
        "model": f"{run.backbone.get('name')} alpha {run.backbone.get('alpha')}, real ImageNet weights, {run.image_size[0]} px, {len(run.labels)} classes (stand-in run {run.path.name})",
        "images": count,
        "repeat": repeat,
        "tensorflow_s": [round(x, 3) for x in rows["tensorflow_s"]],
        "litert_s": [round(x, 3) for x in rows["litert_s"]],
        "tensorflow_median_s": round(statistics.median(rows["tensorflow_s"]), 3),
        "litert_median_s": round(statistics.median(rows["litert_s"]), 3),
        "tensorflow_ms_per_image": round(1000 * statistics.median(rows["tensorflow_s"]) / count, 1),
        "litert_ms_per_image": round(1000 * statistics.median(rows["litert_s"]) / count, 1),
        "speedup": round(statistics.median(rows["tensorflow_s"]) / statistics.median(rows["litert_s"]), 2),
        "tensors_with_ranges": {"tensorflow": len(theirs), "litert": len(ours), "same_set": set(theirs) == set(ours)},
        "ranges_bit_identical": exact,
        "range_max_rel_diff": float(np.max(rel)),
        "range_median_rel_diff": float(np.median(rel)),
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
    }
    return result


def _ranges(content: bytes) -> dict[int, tuple[float, float]]:
    from trainer.export.schema import tflite_schema

    model = tflite_schema().ModelT.InitFromPackedBuf(bytearray(content), 0)
    return {i: (float(t.quantization.min[0]), float(t.quantization.max[0])) for i, t in enumerate(model.subgraphs[0].tensors)
            if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min)}


def part_export(run_dir: Path, bench: Bench, work: Path, repeat: int) -> dict[str, Any]:
    header = _header()
    rows: dict[str, list[dict[str, Any]]] = {"tensorflow": [], "litert": []}
    for i in range(repeat):
        for kind in ("tensorflow", "litert"):  # alternated, so a change in load hits both
            out = work / f"bundle-{kind}-{i}-{int(time.time())}"
            env = {**bench.env(work / "cache"), "TLEDGE_CALIBRATOR": kind}
            row = run_timed([*bench.cli(), "export", str(run_dir), "--quantize", "--out", str(out), "--json"], ROOT, env, EXPORT_MARKS)
            report = row["result"]
            rows[kind].append({"run": i, "wall_s": row["wall_s"], "cpu_s": row["cpu_s"], "load_avg_1m": row["load_avg_1m"],
                               "stages": export_stages(row["marks"], row["wall_s"]), "calibrator": report.get("calibrator"),
                               "bundle": str(out), **fidelity(report)})
            print(json.dumps({"calibrator": kind, **rows[kind][-1]}), file=sys.stderr, flush=True)
    summary = {kind: {"wall_median_s": round(statistics.median(r["wall_s"] for r in group), 2),
                      "conversion_median_s": round(statistics.median(r["stages"]["conversion_s"] for r in group), 2),
                      "cpu_median_s": round(statistics.median(r["cpu_s"] for r in group), 1)} for kind, group in rows.items()}
    return {**header, "run_dir": str(run_dir), "repeat": repeat, "rows": rows, "summary": summary,
            "files_compared": _compare_files(run_dir, rows["tensorflow"][0]["bundle"], rows["litert"][0]["bundle"]),
            "load_avg_end": [round(x, 2) for x in os.getloadavg()]}


def _compare_files(run_dir: Path, bundle_tf: str, bundle_litert: str) -> dict[str, Any]:
    """The two int8 files on the run's val images: top-1 agreement and output steps apart."""
    import numpy as np

    from edge.runtime import make_interpreter
    from trainer.export.decoding import BackgroundDecoder
    from trainer.run_dir import read_run

    run = read_run(run_dir)
    with BackgroundDecoder(run.image_size, run.resize) as decoder:
        decoder.submit("val", [p for p, _ in run.splits["val"]], "val")
        images = decoder.images("val")
    outputs = []
    for bundle in (bundle_tf, bundle_litert):
        interpreter, _ = make_interpreter((Path(bundle) / "model.tflite").read_bytes(), threads=2)
        i, o = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
        rows = []
        for image in images:
            interpreter.set_tensor(i, image[None])
            interpreter.invoke()
            rows.append(interpreter.get_tensor(o)[0].astype(np.int32))
        outputs.append(np.stack(rows))
    diff = np.abs(outputs[0] - outputs[1])
    return {"images": len(images), "top1_agreement": float((outputs[0].argmax(1) == outputs[1].argmax(1)).mean()),
            "output_steps_mean": float(diff.mean()), "output_steps_max": int(diff.max())}


def part_guard(work: Path, weights: Path, seeds: int, noise: float) -> dict[str, Any]:
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests" / "export"))
    from export_helpers import train_on_clothing  # the guard test's own run

    from trainer.export.convert import convert_detailed, representative_images, stratified_sample
    from trainer.export.decoding import BackgroundDecoder
    from trainer.export.options import DEFAULT_CALIBRATION_IMAGES, CalibratorKind, IOType, QuantizationMode

    header = _header()
    trained = train_on_clothing(ROOT.parent / "shared", weights, work / f"guard-runs-{int(time.time())}", "clothing-guard", subset=60, image_size=224)
    from trainer.run_dir import read_run

    run = read_run(trained.run_dir)
    import keras

    model = keras.models.load_model(run.model_path, compile=False)
    calibration = [p for p, _ in stratified_sample(run.splits["train"], DEFAULT_CALIBRATION_IMAGES, 0)]
    evaluated = [p for p, _ in run.splits["val"] + run.splits["test"]]
    with BackgroundDecoder(run.image_size, run.resize) as decoder:
        decoder.submit("calibration", calibration, "calibration")
        decoder.submit("evaluated", evaluated, "evaluated")
        calibration_images, images = decoder.images("calibration"), decoder.images("evaluated")
    float_top = np.concatenate([model.predict_on_batch(images[i:i + 32].astype(np.float32)).argmax(1) for i in range(0, len(images), 32)])
    samples = representative_images(calibration_images)

    def convert(kind: CalibratorKind) -> bytes:
        return convert_detailed(model, QuantizationMode.INT8, IOType.UINT8, samples, True, kind).model

    tops = {"tensorflow": _top1(convert(CalibratorKind.TENSORFLOW), images), "litert": _top1(convert(CalibratorKind.LITERT), images)}
    for seed in range(seeds):
        with _nudged_tensorflow_ranges(seed, noise):
            tops[f"tensorflow_nudged_seed{seed}"] = _top1(convert(CalibratorKind.TENSORFLOW), images)
    rows = {name: {"top1_agreement_with_float": round(float((top == float_top).mean()), 4),
                   "top1_differs_from_tensorflows_file": int((top != tops["tensorflow"]).sum())} for name, top in tops.items()}
    nudged = [row["top1_agreement_with_float"] for name, row in rows.items() if "nudged" in name]
    return {**header, "run": "test_calibration_guard's (clothing-small, 60 per class and split, 224 px, real weights)", "images": len(images),
            "calibration_images": len(calibration), "noise_rel_sd": noise, "rows": rows,
            "nudged_agreement_min_median_max": [min(nudged), statistics.median(nudged), max(nudged)] if nudged else None,
            "guard_bar": 0.985, "load_avg_end": [round(x, 2) for x in os.getloadavg()]}


def _top1(content: bytes, images: Any) -> Any:
    import numpy as np

    from edge.runtime import make_interpreter

    interpreter, _ = make_interpreter(content, threads=2)
    i, o = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    top = []
    for image in images:
        interpreter.set_tensor(i, image[None])
        interpreter.invoke()
        top.append(int(interpreter.get_tensor(o)[0].argmax()))
    return np.array(top)


class _nudged_tensorflow_ranges:
    """For the block, TensorFlow's calibrator multiplies each min and max it writes by 1 + N(0, noise)."""

    def __init__(self, seed: int, noise: float) -> None:
        self.seed, self.noise = seed, noise

    def __enter__(self) -> None:
        import numpy as np
        from tensorflow.lite.python.optimize import calibrator as tf_calibrator

        from trainer.export.calibration import with_ranges

        self.module, self.original = tf_calibrator, tf_calibrator.Calibrator
        seed, noise = self.seed, self.noise

        class Nudged(self.original):  # type: ignore[misc, name-defined]
            def calibrate(self, dataset_gen: Any) -> bytes:
                rng = np.random.default_rng(seed)
                ranges = _ranges(bytes(super().calibrate(dataset_gen)))
                nudged = {i: (float(np.float32(lo * (1 + noise * rng.standard_normal()))), float(np.float32(hi * (1 + noise * rng.standard_normal()))))
                          for i, (lo, hi) in ranges.items()}
                return with_ranges(self._model_content, nudged)

        tf_calibrator.Calibrator = Nudged

    def __exit__(self, *exc: Any) -> None:
        self.module.Calibrator = self.original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("calibration", "export", "guard"), required=True)
    parser.add_argument("--seeds", type=int, default=5, help="guard: files with nudged TensorFlow ranges")
    parser.add_argument("--noise", type=float, default=1e-6, help="guard: relative SD of the nudge")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tledge-bench-calibrator"))
    parser.add_argument("--weights", type=Path, default=Path(os.environ.get("TLEDGE_WEIGHTS") or WEIGHTS))
    parser.add_argument("--run", type=Path, help="export: time this run's export instead of the stand-in's (e.g. a clothing-small run)")
    parser.add_argument("--key", help="the result file's key for this part (default: the part's name)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.part == "guard":
        part = part_guard(args.work, args.weights, args.seeds, args.noise)
    elif args.part == "export" and args.run:
        run_dir, bench = args.run.resolve(), Bench(ROOT, args.run, args.work, args.weights)  # Bench's data is unused by export
        part = part_export(run_dir, bench, args.work, args.repeat)
    else:
        run_dir, bench = standin_run(args.work, args.weights)
        part = part_calibration(run_dir, args.repeat) if args.part == "calibration" else part_export(run_dir, bench, args.work, args.repeat)
    part["command"] = "scripts/bench_calibrator.py " + " ".join(sys.argv[1:])
    result = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    result[args.key or args.part] = part
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(part, indent=2))


if __name__ == "__main__":
    main()
