"""The export orchestration: read the run folder, convert, check the file, embed the
metadata, verify with the edge runtime, and commit the bundle (see `trainer.export`).

The bundle format is documented in models/README.md.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import LABELS_NAME, MANIFEST_NAME, MODEL_NAME, load_model_info
from trainer.errors import ExportError
from trainer.export.bundle_writer import BundleStaging, check_target
from trainer.export.convert import Converted, convert_detailed, representative_images, stratified_sample
from trainer.export.decoding import BackgroundDecoder
from trainer.export.float_side import cached_features, dense_weights, feature_cache_of, head_float_top
from trainer.export.input_means import MeansSpec, MeansWorker
from trainer.export.metadata import BundleFacts, bundle_info, embed_metadata, info_json, labels_text, manifest
from trainer.export.selftest_writer import write_selftest
from trainer.export.options import MIN_CALIBRATION_IMAGES, CalibratorKind, ExportOptions, IOType, QuantizationMode, resolve_calibrator
from trainer.export.tflite_inspect import TfliteSummary, inspect_tflite
from trainer.export.thresholds_hook import thresholds_section
from trainer.export.verify import FloatTop, bundle_metrics, judge, verify_detailed
from trainer.run_dir import RunFolder, read_run

__all__ = ["CalibrationWarning", "ExportOptions", "ExportResult", "IOType", "QuantizationMode", "check_file", "export"]

REPORT_NAME = "report.json"
#: The note that says why the int8 file was not made from the training run's backbone file.
FILE_REFUSED = "converted the Keras model instead of the training run's backbone file (slower)"
Log = Callable[[str], None]


class CalibrationWarning(UserWarning):
    """Too few calibration images for reliable int8 ranges."""


@dataclass(frozen=True)
class ExportResult:
    """Where the bundle went and what verification measured."""

    bundle_dir: Path
    model_path: Path
    labels_path: Path
    manifest_path: Path
    report_path: Path
    report: dict[str, Any]
    manifest: dict[str, Any]


def _load_keras(run: RunFolder, loaded: Any | None = None) -> Any:
    """The run's Keras model: `loaded` when the caller has it in memory, else read from
    the run folder; either way checked against run.json."""
    from trainer.deps import require_keras

    keras = require_keras("tledge export")
    try:
        model = loaded if loaded is not None else keras.models.load_model(run.model_path, compile=False)
    except (ValueError, OSError, TypeError) as exc:
        raise ExportError(f"Cannot load {run.model_path}: {exc}. Re-train with this tledge version") from None
    shape_in, shape_out = tuple(model.input_shape), tuple(model.output_shape)
    if len(shape_in) != 4 or tuple(shape_in[1:]) != (*run.image_size, 3):
        raise ExportError(f"{run.model_path} takes {shape_in}, but run.json says {run.image_size}; the run folder is inconsistent — re-train")
    if len(shape_out) != 2 or shape_out[1] != len(run.labels):
        raise ExportError(f"{run.model_path} has {shape_out[-1]} outputs for {len(run.labels)} labels; re-train")
    return model


def check_file(summary: TfliteSummary, options: ExportOptions) -> None:
    """Check the converted file itself: builtin ops only, and the I/O types asked for."""
    if summary.custom_ops:
        raise ExportError(f"The converted model needs non-builtin ops {list(summary.custom_ops)} that devices lack; try another --mode")
    if len(summary.inputs) != 1 or len(summary.outputs) != 1:
        raise ExportError("The converted model must have one input and one output (an image classifier)")
    dtype_in, dtype_out = summary.inputs[0].dtype, summary.outputs[0].dtype
    if options.quantization is QuantizationMode.INT8:
        wanted = options.io_type.value.upper()
        if (dtype_in, dtype_out) != (wanted, wanted) or "FLOAT32" in summary.tensor_dtypes:
            raise ExportError(
                f"int8 conversion did not give a full-integer model (input {dtype_in}, output {dtype_out}, "
                f"tensor types {list(summary.tensor_dtypes)}); a layer may lack an int8 kernel — try --mode dynamic"
            )
    elif (dtype_in, dtype_out) != ("FLOAT32", "FLOAT32"):
        raise ExportError(f"{options.quantization.value} conversion gave {dtype_in}/{dtype_out} I/O instead of float32")


def _same_outputs(a: bytes, b: bytes, shape: tuple[int, ...], dtype: str) -> bool:
    """Whether two files (same graph, different metadata) answer one input identically."""
    from edge.runtime import make_interpreter

    rng = np.random.default_rng(0)
    tensor = rng.integers(0, 256, size=shape).astype(np.float32)
    if dtype == "INT8":
        tensor -= 128
    tensor = tensor.astype(dtype.lower())
    outputs = []
    for content in (a, b):
        interpreter, _ = make_interpreter(content, threads=1)
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy())
    return bool(np.array_equal(outputs[0], outputs[1]))


def _source_run(run_dir: Path) -> str:
    rel = os.path.relpath(run_dir.resolve(), Path.cwd())
    return rel if not rel.startswith("..") else str(run_dir.resolve())


def _calibration_paths(run: RunFolder, options: ExportOptions, notes: list[str], log: Log) -> list[str]:
    if options.quantization is not QuantizationMode.INT8:
        return []
    chosen = stratified_sample(run.splits["train"], options.calibration_images, options.seed)
    if not chosen:
        raise ExportError("No calibration images: the run's training split is empty; re-train with a non-empty dataset")
    if len(chosen) < MIN_CALIBRATION_IMAGES:
        message = (
            f"Only {len(chosen)} calibration images (fewer than {MIN_CALIBRATION_IMAGES}): int8 ranges may be "
            "unreliable. Add training images or raise --calibration-images"
        )
        notes.append(message)
        warnings.warn(message, CalibrationWarning, stacklevel=3)
        log(f"warning: {message}")
    return [path for path, _ in chosen]


def export(
    run_dir: str | os.PathLike[str], options: ExportOptions = ExportOptions(), log: Log | None = None,
    float_features: Mapping[str, np.ndarray] | None = None, model: Any | None = None,
) -> ExportResult:
    """Convert, verify and write the bundle of the run at `run_dir`. See the module docstring.

    `float_features` (image path -> pooled backbone features, as `tledge train` computed
    them; by default read from the feature cache that run.json names) lets the float
    side of verification answer from the features and the head
    (`trainer.export.float_side`) when it covers every val/test image; otherwise the
    Keras model is run on the images. `model` is the run's Keras classifier when the
    caller still holds it (`tledge train --export`: the very model it saved), which
    spares reading model.keras back. Raises `ExportError` (or its subclass
    `VerificationFailed`, carrying the report) with a remedy; nothing is left at the
    target folder in that case.
    """
    log = log or (lambda message: None)
    if options.calibration_images < 1:
        raise ExportError("--calibration-images must be at least 1")
    if options.max_drop < 0:
        raise ExportError("--max-drop is in accuracy points and must be >= 0")
    # the calibrator's choice ($TLEDGE_CALIBRATOR included) is checked before any work
    calibrator = resolve_calibrator(options.calibrator) if options.quantization is QuantizationMode.INT8 else None
    run = read_run(run_dir, options.data_root)
    target = Path(options.out) if options.out else Path("models") / run.name
    check_target(target, options.force)
    notes: list[str] = []
    calibration_paths = _calibration_paths(run, options, notes, log)
    verify_splits = {"val": run.splits["val"], "test": run.splits["test"]}
    means = _means_worker(run, options, calibration_paths)
    with means or nullcontext(), BackgroundDecoder(run.image_size, run.resize) as decoder:
        # Everything is queued now: decoding overlaps model loading, conversion and the
        # calibration, and the calibration images come first.
        decoder.submit("calibration", calibration_paths, "Calibration")
        for name, items in verify_splits.items():
            decoder.submit(name, [path for path, _ in items], "Verification")
        if float_features is None:  # tledge export: the training run's features, if cached on disk
            float_features = cached_features(run.run, verify_splits)
        converting = f"converting to {options.quantization.value}" + (f" with {len(calibration_paths)} calibration images" if calibration_paths else "")
        from_file = _from_backbone_file(run, options, calibrator, float_features, decoder, means, notes, converting, log)
        if from_file is not None:
            converted, head = from_file
            float_top = head_float_top(head, float_features, verify_splits) if float_features else None
            return _finish(run, options, None, converted, target, notes, len(calibration_paths), verify_splits, decoder.images, float_top, log)
        model = _load_keras(run, model)
        representative = representative_images(decoder.images("calibration")) if calibration_paths else None
        if not any(note.startswith(FILE_REFUSED) for note in notes):  # else said already
            log(converting)
        converted = convert_detailed(
            model, options.quantization, options.io_type, representative, options.bias_correction, calibrator, means.result if means else None
        )
        _note_calibrator(converted, notes, log)
        float_top = head_float_top(dense_weights(model), float_features, verify_splits) if float_features else None
        return _finish(run, options, model, converted, target, notes, len(calibration_paths), verify_splits, decoder.images, float_top, log)


def _from_backbone_file(
    run: RunFolder, options: ExportOptions, calibrator: CalibratorKind | None, float_features: Mapping[str, np.ndarray] | None,
    decoder: BackgroundDecoder, means: MeansWorker | None, notes: list[str], converting: str, log: Log,
) -> tuple[Converted, tuple[np.ndarray, np.ndarray]] | None:
    """The int8 conversion from the run's float backbone file and head, without Keras
    (`trainer.export.backbone_file`), and the head's (kernel, bias); None when the Keras
    model must be converted: not an int8 export with TensorFlow's calibrator, no backbone
    file or cached features (the float side needs them), or the file path refused (a note
    says why)."""
    from trainer.export.backbone_file import NotApplicable, convert_from_backbone, read_head
    from trainer.export.calibration_shards import default_shards
    from trainer.features.tflite_engine import cached_tflite_path

    where = feature_cache_of(run.run)
    if options.quantization is not QuantizationMode.INT8 or calibrator is not CalibratorKind.TENSORFLOW or where is None or not float_features:
        return None
    backbone = cached_tflite_path(*where)
    if not backbone.is_file() or (options.bias_correction and means is None):
        return None
    log(converting)
    try:
        head = read_head(run.model_path, len(run.labels))
        samples = list(representative_images(decoder.images("calibration"))())
        converted = convert_from_backbone(
            backbone, head, options.io_type, samples, means.result if options.bias_correction and means else None, default_shards()
        )
    except NotApplicable as why:
        message = f"{FILE_REFUSED}: {why}"
        notes.append(message)
        log(f"note: {message}")
        return None
    return converted, (head.kernel, head.bias)


def _means_worker(run: RunFolder, options: ExportOptions, calibration_paths: list[str]) -> MeansWorker | None:
    """Bias correction's statistics measured on the run's float TFLite backbone in a process
    of its own, started now (`trainer.export.input_means`);
    None when the correction does not run or run.json names no feature cache holding it."""
    from trainer.export.calibration_shards import usable_cpus
    from trainer.features.tflite_engine import cached_tflite_path

    where = feature_cache_of(run.run)
    if not (options.quantization is QuantizationMode.INT8 and options.bias_correction and calibration_paths and where is not None):
        return None
    backbone = cached_tflite_path(*where)
    if not backbone.is_file():
        return None
    # every CPU: the int8 file is then made from that backbone file (`_from_backbone_file`),
    # which waits for these means with nothing else to run
    return MeansWorker(MeansSpec(backbone, tuple(calibration_paths), run.image_size, run.resize, threads=usable_cpus()))


def _note_calibrator(converted: Converted, notes: list[str], log: Log) -> None:
    """A note when TensorFlow's calibrator ran although LiteRT's was asked for."""
    if converted.calibrator_note is None:
        return
    message = f"TensorFlow's calibrator measured the int8 ranges (slower, same result): {converted.calibrator_note}"
    notes.append(message)
    log(f"note: {message}")


def _finish(
    run: RunFolder, options: ExportOptions, model: Any, converted: Converted, target: Path, notes: list[str], calibration_count: int,
    verify_splits: dict[str, Any], images: Callable[[str], np.ndarray], float_top: FloatTop | None, log: Log,
) -> ExportResult:
    raw = converted.model
    summary = inspect_tflite(raw)
    check_file(summary, options)
    facts = BundleFacts(run.name, run.labels, run.image_size, run.resize.value, run.backbone, _source_run(run.path), options.quantization)
    with BundleStaging(target, options.force) as stage:
        staged = stage.write(MODEL_NAME, embed_metadata(raw, facts, bundle_info(facts, summary, None)))
        log("verifying with the edge runtime on val + test")
        measured, predictions = verify_detailed(model, staged, verify_splits, run.labels, options.threads, images, float_top)
        report = {
            "quantization": options.quantization.value,
            "io": summary.inputs[0].dtype.lower(),
            "calibration_images": calibration_count,
            "bias_correction": options.bias_correction and options.quantization is QuantizationMode.INT8,
            # what measured the int8 ranges: "litert" (trainer/export/calibration.py) or "tensorflow"; null if not int8
            "calibrator": None if converted.calibrator is None else converted.calibrator.value,
            # TensorFlow's calibrator: how many shards of the calibration images it ran on at
            # once (the single pass's exact ranges either way); 1 when the single pass ran
            "calibrator_shards": converted.calibrator_shards,
            # bias correction's per-conv input means: "tflite" (measured on the training run's
            # float backbone file, in a process of its own) or "keras"; null: no correction
            "bias_correction_means": converted.bias_means,
            # what was converted: "backbone_file" (the training run's float backbone file and
            # the head, trainer/export/backbone_file.py) or "keras" (the Keras model)
            "converted_from": converted.source,
            "ops": list(summary.ops),
            "tensor_dtypes": list(summary.tensor_dtypes),
            "source_run": facts.source_run,
            "warnings": notes,
            # the float model's answers: its Keras model run on the images, or the training
            # run's backbone features through its head (tledge train --export)
            "float_side": "keras" if float_top is None else "features+head",
            **measured,
        }
        report = judge(report, options.max_drop, options.accept_drop)
        report, decision = thresholds_section(report, predictions, run.labels, options.target_precision, log)
        info = {**bundle_info(facts, summary, bundle_metrics(report)), **decision}
        final = embed_metadata(raw, facts, info)
        if not _same_outputs(staged.read_bytes(), final, summary.inputs[0].shape, summary.inputs[0].dtype):
            raise ExportError("Re-embedding the metadata changed the model's outputs; please report this bug")
        report = {**report, "model_size_bytes": len(final)}  # the final file, metadata included
        bundle_manifest = manifest(info, final)
        stage.write(MODEL_NAME, final)
        bundle_manifest = {**bundle_manifest, **write_selftest(stage, run.splits)}  # golden self-test, covered by the manifest
        stage.write(LABELS_NAME, labels_text(run.labels))
        stage.write(MANIFEST_NAME, info_json(bundle_manifest))
        stage.write(REPORT_NAME, info_json(report))
        load_model_info(stage.dir)  # type: ignore[arg-type]  # the device's checks: sha256, labels, format
        bundle_dir = stage.commit()
    log(f"bundle written to {bundle_dir}")
    return ExportResult(
        bundle_dir=bundle_dir,
        model_path=bundle_dir / MODEL_NAME,
        labels_path=bundle_dir / LABELS_NAME,
        manifest_path=bundle_dir / MANIFEST_NAME,
        report_path=bundle_dir / REPORT_NAME,
        report=report,
        manifest=bundle_manifest,
    )
