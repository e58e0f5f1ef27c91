"""Keras -> .tflite bytes, one recipe per `QuantizationMode`, and the int8 calibration data.

The converter is given a concrete function of the model with a fixed input signature
(1, H, W, 3) float32 raw pixels, so the file has a static batch of 1, the shape every
device feeds. (Before, the model went through a SavedModel written with ``model.export``
and read back; the concrete function gives the same graph without that round trip.)
The converter itself would still lower a concrete function to a SavedModel in a
temporary folder and read it back; that is switched off (the frozen function gives the
same operators, weights and quantization parameters), and `trainer.export.signature`
adds the serving signature that path would have written.

int8 ranges are measured by TensorFlow's calibrator, on one shard of the samples per CPU
at once with the single pass's exact result (`trainer.export.calibration_shards`), or with
`CalibratorKind.LITERT` (or $TLEDGE_CALIBRATOR=litert) by the edge runtime's interpreter,
the same ranges to float rounding and several times faster (`trainer.export.calibration`);
TensorFlow's quantizer does the rest either way.

An int8 export of a training run whose feature cache still holds its float backbone file
is made from that file without this module's Keras conversion: `trainer.export.backbone_file`.

int8 first corrects the mean shift of int8 weight rounding (`trainer.export.bias_correction`)
in the model for the conversion only, measured on the calibration images; it raises int8's top-1
agreement with the float model (scripts/bench_export.py, BENCHMARKS.md section 2).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.errors import ImageError
from edge.images import load_rgb
from edge.preprocess import ResizePolicy, resize_rgb
from trainer.errors import ExportError
from trainer.export.options import CalibratorKind, IOType, QuantizationMode, resolve_calibrator
from trainer.export.signature import with_serving_signature
from trainer.quiet import native_stderr_hidden

if TYPE_CHECKING:
    from trainer.export.input_means import ConvMean

Sample = tuple[str, int]  # (image path, class index)


def stratified_sample(items: Sequence[Sample], count: int, seed: int = 0) -> list[Sample]:
    """Up to `count` items taken round-robin over the classes, in a seeded random order.

    Every class gets about count / classes images (a rare class gives all it has and the
    others fill the remainder), so the int8 ranges see every class, not just the big ones.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Sample]] = {}
    for path, label in items:
        by_class.setdefault(int(label), []).append((str(path), int(label)))
    queues = []
    for label in sorted(by_class):
        members = by_class[label]
        queues.append([members[i] for i in rng.permutation(len(members))])
    chosen: list[Sample] = []
    depth = 0
    while len(chosen) < count and any(depth < len(q) for q in queues):
        for queue in queues:
            if depth < len(queue) and len(chosen) < count:
                chosen.append(queue[depth])
        depth += 1
    return chosen


def representative_dataset(
    paths: Sequence[str], size: tuple[int, int], resize: ResizePolicy | str
) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The converter's calibration generator: float32 raw pixels (1, H, W, 3), like training.

    Images are decoded and resized exactly as on the device. The first sample gets one
    black and one white pixel so the observed input range is exactly 0..255: then a uint8
    input has scale 1 and zero point 0 and camera pixels go in unchanged.
    """
    if not paths:
        raise ExportError("No calibration images: the run's training split is empty; re-train with a non-empty dataset")

    def generate() -> Iterator[list[np.ndarray]]:
        for index, path in enumerate(paths):
            try:
                pixels = resize_rgb(load_rgb(path), size, resize).astype(np.float32)
            except ImageError as exc:
                raise ExportError(f"Calibration image unusable: {exc}. Fix or remove it and re-train") from None
            if index == 0:
                pixels[0, 0] = 0.0
                pixels[0, 1] = 255.0
            yield [pixels[None, ...]]

    return generate


def representative_images(images: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The calibration generator over images already decoded and resized, (N, H, W, 3) uint8.

    Samples are fed one at a time: the calibrator's cost per image does not fall with
    batching, and a batch of 1 is the shape the converted file keeps. The first sample
    gets one black and one white pixel, as in `representative_dataset`.
    """
    if not len(images):
        raise ExportError("No calibration images: the run's training split is empty; re-train with a non-empty dataset")

    def generate() -> Iterator[list[np.ndarray]]:
        for index in range(len(images)):
            pixels = images[index].astype(np.float32)
            if index == 0:
                pixels[0, 0] = 0.0
                pixels[0, 1] = 255.0
            yield [pixels[None, ...]]

    return generate


_CORRECTION_BATCH = 32  # calibration images per forward pass when measuring input means


def _batches(representative: Callable[[], Iterator[list[np.ndarray]]]) -> Iterator[np.ndarray]:
    """The calibration samples (1, H, W, 3) stacked into batches for a Keras forward pass."""
    batch: list[np.ndarray] = []
    for (sample,) in representative():
        batch.append(sample[0])
        if len(batch) == _CORRECTION_BATCH:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def _configure(converter: Any, tf: Any, mode: QuantizationMode, io_type: IOType, representative: Any) -> None:
    if mode is QuantizationMode.FLOAT32:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode is QuantizationMode.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    elif mode is QuantizationMode.INT8:
        if representative is None:
            raise ExportError("int8 conversion needs calibration images (a representative dataset)")
        converter.representative_dataset = representative
        # Builtin int8 kernels only: conversion fails instead of leaving float or Flex ops.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io = tf.uint8 if io_type is IOType.UINT8 else tf.int8
        converter.inference_input_type = io
        converter.inference_output_type = io


@dataclass(frozen=True)
class Converted:
    """A conversion's file and, for int8, which calibrator measured its ranges."""

    model: bytes
    calibrator: CalibratorKind | None = None  # None: no calibration (not int8)
    calibrator_note: str | None = None  # why TensorFlow's calibrator ran when LiteRT was asked for
    calibrator_shards: int | None = None  # TensorFlow's calibrator: shards of the samples calibrated at once
    shards_note: str | None = None  # why TensorFlow's calibrator ran as one pass (same ranges, slower)
    bias_means: str | None = None  # bias correction's input means: "tflite" (the run's backbone file), "keras"; None: no correction
    source: str = "keras"  # what was converted: "keras" (the Keras model) or "backbone_file" (trainer.export.backbone_file)


def convert(
    model: Any,
    mode: QuantizationMode,
    io_type: IOType = IOType.UINT8,
    representative: Callable[[], Iterator[list[np.ndarray]]] | None = None,
    bias_correction: bool = True,
    calibrator: CalibratorKind | None = None,
) -> bytes:
    """Convert a Keras 3 image classifier (raw pixel input) to .tflite bytes.

    With `bias_correction` (int8 only) the converter sees `model` with BatchNorms that
    cancel the mean shift of int8 weight rounding; `model`'s weights are as they were
    when this returns (or raises). `calibrator` (int8): None = $TLEDGE_CALIBRATOR, else TensorFlow's.
    """
    return convert_detailed(model, mode, io_type, representative, bias_correction, calibrator).model


def convert_detailed(
    model: Any,
    mode: QuantizationMode,
    io_type: IOType = IOType.UINT8,
    representative: Callable[[], Iterator[list[np.ndarray]]] | None = None,
    bias_correction: bool = True,
    calibrator: CalibratorKind | None = None,
    input_means: Callable[[], Sequence[ConvMean] | None] | None = None,
) -> Converted:
    """`convert`, also saying which calibrator ran (int8). `input_means` gives bias
    correction's statistics measured on the run's float backbone file
    (`trainer.export.input_means`; None: measured through Keras)."""
    from trainer.deps import require_tensorflow

    tf = require_tensorflow("tledge export")
    wanted = resolve_calibrator(calibrator) if mode is QuantizationMode.INT8 else None
    record = None
    correction = None
    with ExitStack() as stack:
        if mode is QuantizationMode.INT8 and bias_correction and representative is not None:
            from trainer.export.bias_correction import bias_corrected_in_place

            # the converter reads the corrected weights; the block puts the originals back
            measured = input_means() if input_means is not None else None
            correction = stack.enter_context(bias_corrected_in_place(model, _batches(representative), measured))
        if wanted is CalibratorKind.LITERT:
            from trainer.export.calibration import litert_calibration

            record = stack.enter_context(litert_calibration())
        elif wanted is CalibratorKind.TENSORFLOW:
            from trainer.export.calibration_shards import sharded_calibration

            # TensorFlow's own ranges, bit for bit, measured on a shard of the samples per CPU
            record = stack.enter_context(sharded_calibration())
        raw = _convert(tf, model, mode, io_type, representative)
    means_from = correction.means_from if correction is not None else None
    if wanted is None or record is None:
        return Converted(with_serving_signature(raw), bias_means=means_from)
    if wanted is CalibratorKind.TENSORFLOW:
        return Converted(with_serving_signature(raw), CalibratorKind.TENSORFLOW, None, record.shards, record.fallback_reason, means_from)
    return Converted(with_serving_signature(raw), record.used, record.fallback_reason, 1 if record.fallback_reason else None, bias_means=means_from)


def _convert(tf: Any, model: Any, mode: QuantizationMode, io_type: IOType, representative: Any) -> bytes:
    converter = _converter(tf, model)
    _configure(converter, tf, mode, io_type, representative)
    try:
        with warnings.catch_warnings(), native_stderr_hidden():  # the converter prints from C++
            # "Statistics for quantized inputs were expected": only for the legacy
            # quantized_input_stats path; post-training calibration sets them.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            return bytes(converter.convert())
    except ExportError:
        raise
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError...
        lines = str(exc).strip().splitlines() or [repr(exc)]  # the last line names the cause
        raise ExportError(
            f"TFLite conversion ({mode.value}) failed: {lines[-1]}. "
            "Try another --mode, or check that the model uses only standard Keras layers"
        ) from None


def _converter(tf: Any, model: Any) -> Any:
    """A TFLiteConverter over the model's inference function, batch fixed at 1."""
    height, width = (int(d) for d in model.input_shape[1:3])
    signature = [tf.TensorSpec([1, height, width, 3], tf.float32, name="image")]

    class _Variables(tf.Module):  # tracks the model's variables so the converter freezes them
        def __init__(self) -> None:
            super().__init__()
            self.tracked = [w.value for w in model.weights]

    try:
        with native_stderr_hidden():  # TensorFlow prints from C++ while tracing
            function = tf.function(lambda image: model(image, training=False), input_signature=signature).get_concrete_function()
    except (ValueError, TypeError) as exc:
        raise ExportError(f"The Keras model cannot be traced for conversion: {exc}") from None
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], _Variables())
    # Convert the frozen function directly, not through a SavedModel written to a
    # temporary folder and loaded back (the same graph, without that fixed cost).
    converter.experimental_lower_to_saved_model = False
    return converter
