"""int8 calibration ranges measured with the edge runtime's interpreter, handed to
TensorFlow's own quantizer.

For a full-integer conversion TensorFlow's converter (`TFLiteConverterBase._quantize`)
makes the float model, gives it to `tensorflow.lite.python.optimize.calibrator.Calibrator`,
calls its `calibrate(input_gen)` and quantizes what that returns with its MLIR quantizer.
`calibrate` runs the float model one sample at a time on a logging interpreter without
XNNPACK, single-threaded, and returns the float model with each logged tensor's
quantization parameters replaced by just `min` and `max`: the extremes over all samples.
It logs, for every operator, the float32 inputs and outputs that hold no constant data,
inputs both before and after the operator runs. The second look matters where the
operator wrote its output over an input's memory (TFLite runs ADD in place when nothing
else reads that input): that input's range then also covers the output's values.

`litert_calibration` swaps that class, for one conversion, for one whose `calibrate`
measures the same tensors on the float model with every logged tensor made a graph
output, run by the edge runtime's interpreter (XNNPACK, several threads), and folds in the
in-place outputs as TensorFlow's logger sees them (which inputs share memory with an
output is read from TensorFlow's own interpreter's memory plan, without running it). It
writes the ranges the way TensorFlow's calibrator does, and TensorFlow's quantizer does
the rest. Anything this does not cover (several subgraphs, operators with intermediate
tensors such as LSTM, samples given by signature, NaN values, custom-op registerers) is
left to TensorFlow's calibrator, and the record says so.

TensorFlow's calibrator itself, the default, runs on shards of the samples at once with
its single pass's exact result: `trainer.export.calibration_shards`.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import ModelError
from trainer.export.options import CalibratorKind
from trainer.export.schema import TFLITE_IDENTIFIER, tflite_schema

__all__ = [
    "CalibrationRecord", "Measure", "Unsupported", "litert_calibration", "logged_tensors", "measure_ranges", "plan", "swapped_calibrator",
    "tensor_indices", "with_outputs", "with_ranges",
]

Ranges = dict[int, tuple[float, float]]  # tensor index in subgraph 0 -> (min, max)

_SWAP_LOCK = threading.RLock()  # the swap is process-wide: one conversion at a time


class Unsupported(Exception):
    """The model or the samples need TensorFlow's own calibrator (the message says why)."""


@dataclass
class CalibrationRecord:
    """Which calibrator measured the ranges of a conversion, and why TensorFlow's if not asked for."""

    used: CalibratorKind = CalibratorKind.TENSORFLOW
    fallback_reason: str | None = None
    calibrations: int = 0  # calibrate() calls the converter made
    shards: int = 1  # TensorFlow's calibrator: shards of the samples calibrated at once (trainer.export.calibration_shards)

    def fell_back(self, reason: str) -> None:
        self.used = CalibratorKind.TENSORFLOW
        self.shards = 1  # TensorFlow's single pass
        self.fallback_reason = reason


@dataclass(frozen=True)
class _Plan:
    """What to measure on one float model."""

    logged: tuple[int, ...]  # tensor indices TensorFlow's calibrator logs, ascending
    in_place: tuple[tuple[int, int], ...]  # (input, output) of an operator that share memory
    measured_model: bytes  # the float model with every logged tensor a graph output


def logged_tensors(model: Any) -> tuple[int, ...]:
    """Tensors of subgraph 0 that TensorFlow's calibrator logs: every operator's float32
    inputs and outputs without constant data. `model` is a schema `ModelT`."""
    schema = tflite_schema()
    graph = model.subgraphs[0]
    logged: set[int] = set()
    for op in graph.operators:
        for index in [*tensor_indices(op.inputs), *tensor_indices(op.outputs)]:
            tensor = graph.tensors[index]
            data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
            if tensor.type == schema.TensorType.FLOAT32 and (data is None or len(data) == 0):
                logged.add(index)
    return tuple(sorted(logged))


def tensor_indices(values: Any) -> list[int]:
    """An operator's or a graph's tensor indices, without the -1 of an optional input left out."""
    return [int(v) for v in (values if values is not None else []) if int(v) >= 0]  # -1: an optional input left out


def _check_supported(model: Any) -> None:
    if len(model.subgraphs) != 1:
        raise Unsupported(f"the model has {len(model.subgraphs)} subgraphs")
    if any(getattr(buffer, "offset", 0) for buffer in model.buffers):
        raise Unsupported("the model keeps its weights outside the flatbuffer (a file over 2 GB)")
    for op in model.subgraphs[0].operators:
        if op.intermediates is not None and len(op.intermediates):
            raise Unsupported("an operator logs intermediate tensors (LSTM-like)")


def _in_place_pairs(model_content: bytes, model: Any, logged: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """(input, output) pairs of one operator that TensorFlow's interpreter gives one buffer.

    Read from the memory plan of TensorFlow's interpreter, the one its calibrator runs
    (builtin kernels, no delegate): allocated, never invoked. A pair of unequal size would
    leave part of the input's old values in the buffer; that is not modelled.
    """
    from tensorflow.lite.python import interpreter as tf_interpreter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        probe = tf_interpreter.Interpreter(
            model_content=model_content,
            experimental_op_resolver_type=tf_interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    probe.allocate_tensors()
    wanted = set(logged)
    address: dict[int, tuple[int, int]] = {}
    for index in logged:
        view = probe.tensor(index)()
        address[index] = (view.ctypes.data, view.nbytes)
        del view  # the interpreter refuses to work while a view is held
    pairs = []
    for op in model.subgraphs[0].operators:
        for out in tensor_indices(op.outputs):
            for inp in tensor_indices(op.inputs):
                if inp in wanted and out in wanted and inp != out and address[inp][0] == address[out][0]:
                    if address[inp][1] != address[out][1]:
                        raise Unsupported("an in-place operator's output differs in size from its input")
                    pairs.append((inp, out))
    return tuple(pairs)


def with_outputs(model: Any, logged: tuple[int, ...]) -> bytes:
    """The model with every logged tensor made a graph output, so a delegate writes them."""
    import flatbuffers

    graph = model.subgraphs[0]
    kept = set(tensor_indices(graph.inputs)) | set(tensor_indices(graph.outputs))
    graph.outputs = [*tensor_indices(graph.outputs), *(i for i in logged if i not in kept)]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def plan(model_content: bytes) -> _Plan:
    """What to measure on `model_content`, or `Unsupported`."""
    schema = tflite_schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_content), 0)
    _check_supported(model)
    logged = logged_tensors(model)
    if not logged:
        raise Unsupported("no float32 tensor to calibrate")
    in_place = _in_place_pairs(model_content, model, logged)
    return _Plan(logged, in_place, with_outputs(model, logged))


def measure_ranges(model_content: bytes, samples: Iterable[Any], threads: int | None = None) -> Ranges:
    """Per logged tensor, the min and max over `samples` as TensorFlow's calibrator logs them.

    `samples` are what a converter's representative dataset yields: lists of arrays, one
    per model input, in the model's input order, shaped and typed like the inputs.
    Raises `Unsupported` when TensorFlow's calibrator must do it.
    """
    chosen = plan(model_content)
    low, high = _extremes(chosen, samples, threads)
    for inp, out in chosen.in_place:  # the input's buffer held the output's values when logged again
        a, b = chosen.logged.index(inp), chosen.logged.index(out)
        low[a], high[a] = min(low[a], low[b]), max(high[a], high[b])
    if np.isnan(low).any() or np.isnan(high).any():
        raise Unsupported("the model gave NaN values on the calibration images")
    return {index: (float(low[k]), float(high[k])) for k, index in enumerate(chosen.logged)}


def _extremes(chosen: _Plan, samples: Iterable[Any], threads: int | None) -> tuple[np.ndarray, np.ndarray]:
    from edge.runtime import make_interpreter

    interpreter, _ = make_interpreter(chosen.measured_model, threads=threads)
    inputs = interpreter.get_input_details()
    low = np.full(len(chosen.logged), np.inf, np.float32)
    high = np.full(len(chosen.logged), -np.inf, np.float32)
    count = 0
    for sample in samples:
        _feed(interpreter, inputs, sample)
        interpreter.invoke()
        for k, index in enumerate(chosen.logged):
            view = interpreter.tensor(index)()
            if view.size == 0:
                raise Unsupported("a logged tensor is empty")
            # np.minimum keeps a NaN, so it is seen below and left to TensorFlow
            low[k], high[k] = np.minimum(low[k], view.min()), np.maximum(high[k], view.max())
            del view  # no view may be held across the next set_tensor / invoke
        count += 1
    if not count:
        raise Unsupported("the representative dataset gave no samples")
    return low, high


def _feed(interpreter: Any, inputs: list[dict[str, Any]], sample: Any) -> None:
    if not isinstance(sample, list):  # dicts and (signature, dict) tuples: TensorFlow's
        raise Unsupported("calibration samples given by signature or name")
    if len(sample) != len(inputs):
        raise Unsupported(f"a sample has {len(sample)} arrays for {len(inputs)} inputs")
    for detail, array in zip(inputs, sample):
        array = np.asarray(array)
        if tuple(array.shape) != tuple(detail["shape"]) or array.dtype != detail["dtype"]:
            raise Unsupported(f"a sample {array.dtype}{list(array.shape)} differs from the input {np.dtype(detail['dtype'])}{list(detail['shape'])}")
        interpreter.set_tensor(detail["index"], array)


def with_ranges(model_content: bytes, ranges: Ranges) -> bytes:
    """`model_content` with each tensor's quantization parameters replaced by its range
    (min and max only), as TensorFlow's calibrator writes them."""
    import flatbuffers

    schema = tflite_schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_content), 0)
    tensors = model.subgraphs[0].tensors
    for index, (low, high) in ranges.items():
        params = schema.QuantizationParametersT()
        params.min, params.max = [low], [high]
        tensors[index].quantization = params
    builder = flatbuffers.Builder(len(model_content) + 1024)
    builder.Finish(model.Pack(builder), TFLITE_IDENTIFIER)
    return bytes(builder.Output())


#: measure(model_content, dataset_gen) -> the calibrated float model; raises `Unsupported`
#: when TensorFlow's own single pass must measure instead.
Measure = Callable[[bytes, Callable[[], Iterator[Any]]], bytes]


def _swapped_class(base: type, record: CalibrationRecord, measure: Measure) -> type:
    """A subclass of TensorFlow's `Calibrator` whose `calibrate` is `measure`, falling back
    to TensorFlow's own (with the reason in `record`) when `measure` raises `Unsupported`."""

    class SwappedCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self, model_content: bytes, by_name: Any = None, by_func: Any = None) -> None:
            super().__init__(model_content, by_name, by_func)  # parses the model; cheap, and the fallback
            self._custom_ops = bool(by_name) or bool(by_func)

        def calibrate(self, dataset_gen: Callable[[], Iterator[Any]]) -> bytes:
            record.calibrations += 1
            try:
                if self._custom_ops:
                    raise Unsupported("custom-op registerers were given")
                return measure(self._model_content, dataset_gen)
            except Unsupported as why:
                record.fell_back(str(why))
                return super().calibrate(dataset_gen)  # the generator function starts afresh

    return SwappedCalibrator


@contextmanager
def swapped_calibrator(record: CalibrationRecord, measure: Callable[[type], Measure]) -> Iterator[CalibrationRecord]:
    """For the block, TensorFlow's converter calibrates through `measure(TensorFlow's
    Calibrator class)`; TensorFlow's class is put back on exit, also on error. `record`
    says so when the installed TensorFlow has no calibrator to swap or the converter did
    not call it."""
    try:
        from tensorflow.lite.python import lite as tf_lite
    except ImportError:  # pragma: no cover - trainer needs TensorFlow
        tf_lite = None
    module = getattr(tf_lite, "_calibrator", None)
    base = getattr(module, "Calibrator", None)
    if not isinstance(base, type):
        record.fell_back("this TensorFlow's converter has no calibrator to replace (tensorflow.lite.python.lite._calibrator.Calibrator)")
        yield record
        return
    with _SWAP_LOCK:
        module.Calibrator = _swapped_class(base, record, measure(base))
        try:
            yield record
        finally:
            module.Calibrator = base
    if record.calibrations == 0 and record.fallback_reason is None:
        record.fell_back("the converter did not call the replaced calibrator")


@contextmanager
def litert_calibration(threads: int | None = None) -> Iterator[CalibrationRecord]:
    """For the block, TensorFlow's converter calibrates with LiteRT (see the module
    docstring); TensorFlow's class is put back on exit, also on error.

    The record says what ran: `used` stays TENSORFLOW, with a reason, when the installed
    TensorFlow has no calibrator to swap, when the converter did not call it, or when the
    model needs TensorFlow's.
    """
    record = CalibrationRecord()

    def measure(content: bytes, dataset_gen: Callable[[], Iterator[Any]]) -> bytes:
        try:
            ranges = measure_ranges(content, dataset_gen(), threads)
        except ModelError as why:  # LiteRT cannot load the float model
            raise Unsupported(str(why)) from None
        record.used = CalibratorKind.LITERT
        return with_ranges(content, ranges)

    with swapped_calibrator(record, lambda base: measure) as used:
        yield used
