"""TensorFlow's own int8 calibration, run on several shards of the samples at once.

TensorFlow's calibrator (`tensorflow.lite.python.optimize.calibrator.Calibrator`) logs,
per tensor, a plain running min and max over every value of every sample (`MinMax::Update`
in TFLite's calibration logger: ``min_ = std::min(min_, value)`` per value, NaN values
skipped, no averaging; every shard starts from the same initial values), and writes them
into the float model. So the samples can be split into consecutive shards, each calibrated
on its own, and the shards' extremes folded in sample order: that is exactly the one-pass
result, ties between 0.0 and -0.0 included (like ``std::min``, the fold keeps the earlier
shard's value unless a later one is strictly smaller). The merged values are written over the first shard's calibrated model, in place,
so the file is the one TensorFlow's single pass writes, byte for byte
(scripts/shard_calibration_check.py, tests/export/test_calibration_shards.py).

The calibrator holds Python's GIL while it runs the model (two threads took as long as one
pass), so shards after the first run in processes of their own
(`trainer.export.calibration_worker`), which load TensorFlow's calibration extension
module from its file without importing TensorFlow (about 0.1 s to start). The first shard
runs in this process, through TensorFlow's class.

Anything this does not cover is left to TensorFlow's single pass, and the record says why:
several subgraphs, operators with intermediate tensors (LSTM-like), custom-op registerers,
samples given by signature or name or not as numpy arrays, samples of differing shapes or
types, too few samples to be worth a process, a tensor that got a range in one shard
but not in another (all its values NaN there), or a shard that failed (the single pass then
raises TensorFlow's own error, if any).
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import ExportError
from trainer.export.calibration import CalibrationRecord, Measure, Unsupported, swapped_calibrator
from trainer.export.schema import tflite_schema

__all__ = ["MIN_SAMPLES_PER_SHARD", "SHARDS_ENV", "calibrate_in_shards", "default_shards", "merge_calibrated", "shard_bounds", "sharded_calibration"]

#: Fewest samples a shard gets: a worker costs about 0.2 s before its first sample (Python,
#: numpy, reading its samples) and a sample about 0.1 s to calibrate (MobileNetV2 at
#: 224 px), so smaller shards gain little.
MIN_SAMPLES_PER_SHARD = 8

_MAX_SAMPLE_BYTES = 1 << 30  # samples are held in memory and copied to the workers: above this, one pass
_WORKER = Path(__file__).with_name("calibration_worker.py")
# A worker calibrates as many samples as this process's shard, so after that shard is done
# it gets twice that time again, and at least this many seconds, before it counts as hung
# (then the single pass runs).
_WORKER_GRACE_S = 30.0
_ALONE_TIMEOUT_S = 600.0  # a worker calibrating without a pass here to time it against

Slot = tuple[int, int]  # byte offsets of one tensor's float32 min and max in a calibrated model


#: Environment variable that sets the number of shards (1: TensorFlow's single pass).
SHARDS_ENV = "TLEDGE_CALIBRATION_SHARDS"


def default_shards(env: Mapping[str, str] | None = None) -> int:
    """$TLEDGE_CALIBRATION_SHARDS, else one shard per CPU this process may run on."""
    value = (os.environ if env is None else env).get(SHARDS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ExportError(f"${SHARDS_ENV} must be a whole number of at least 1 (1: one calibration pass), not {value!r}")
        return int(value)
    return usable_cpus()


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def shard_bounds(count: int, shards: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) ranges splitting `count` samples into at most `shards` shards
    of at least `MIN_SAMPLES_PER_SHARD` each (one range when there are too few)."""
    shards = max(1, min(shards, count // MIN_SAMPLES_PER_SHARD))
    edges = np.linspace(0, count, shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _range_slots(content: bytes) -> list[Slot]:
    """Where each tensor's min and max sit in a calibrated model, in tensor order.

    Read with the schema's table accessors (no unpacking of the weights): `_tab.Vector`
    is the absolute position of a vector's first element, the same lookup the generated
    `Min(j)` / `Max(j)` accessors make.
    """
    schema = tflite_schema()
    model = schema.Model.GetRootAs(content, 0)
    if model.SubgraphsLength() != 1:
        raise Unsupported(f"the model has {model.SubgraphsLength()} subgraphs")
    graph = model.Subgraphs(0)
    slots = []
    for index in range(graph.TensorsLength()):
        quantization = graph.Tensors(index).Quantization()
        if quantization is None or (quantization.MinLength() == 0 and quantization.MaxLength() == 0):
            continue
        if quantization.MinLength() != 1 or quantization.MaxLength() != 1:
            raise Unsupported("a calibrated tensor has other than one min and one max")
        table = quantization._tab  # noqa: SLF001 - the generated accessors' own table
        slots.append((table.Vector(table.Offset(4)), table.Vector(table.Offset(6))))  # 4: min, 6: max
    if not slots:
        raise Unsupported("the calibrator wrote no ranges")
    return slots


def merge_calibrated(shards: list[bytes]) -> bytes:
    """The calibrated model of all shards' samples, from each shard's calibrated model (in
    sample order): the first one with every min and max replaced by the fold over all.

    Raises `Unsupported` unless the shards' models are the same bytes apart from those values.
    """
    first = shards[0]
    slots = _range_slots(first)
    positions = np.array([p + k for low, high in slots for p in (low, high) for k in range(4)])
    base = np.frombuffer(first, np.uint8).copy()
    base[positions] = 0
    for other in shards[1:]:
        if len(other) != len(first) or _range_slots(other) != slots:
            raise Unsupported("the shards' calibrated models differ in layout")
        masked = np.frombuffer(other, np.uint8).copy()
        masked[positions] = 0
        if not np.array_equal(base, masked):
            raise Unsupported("the shards' calibrated models differ beyond their ranges")
    merged = bytearray(first)
    for low_at, high_at in slots:
        low, high = _read(first, low_at), _read(first, high_at)
        for other in shards[1:]:
            # strict comparisons, like std::min / std::max: an equal later value (0.0 after -0.0) keeps the earlier
            value = _read(other, low_at)
            low = value if value < low else low
            value = _read(other, high_at)
            high = value if value > high else high
        struct.pack_into("<f", merged, low_at, low)
        struct.pack_into("<f", merged, high_at, high)
    return bytes(merged)


def _read(content: bytes, at: int) -> float:
    return struct.unpack_from("<f", content, at)[0]  # exact: a float32 widened to a double


def _check_samples(samples: list[Any]) -> None:
    """Samples the workers can take as TensorFlow's class would: lists of numpy arrays, all
    shaped and typed like the first (the calibrator sizes its inputs on the first)."""
    first = samples[0]
    if not isinstance(first, list) or not all(isinstance(a, np.ndarray) for a in first):
        raise Unsupported("calibration samples given by signature or name, or not as numpy arrays")
    layout = [(a.shape, a.dtype) for a in first]
    total = 0
    for sample in samples:
        if not isinstance(sample, list) or len(sample) != len(layout):
            raise Unsupported("calibration samples differ in their number of arrays")
        for array, (shape, dtype) in zip(sample, layout):
            if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != dtype:
                raise Unsupported("calibration samples differ in shape or type")
            total += array.nbytes
    if total > _MAX_SAMPLE_BYTES:
        raise Unsupported(f"the calibration samples take {total >> 20} MiB, more than shards copy")


def _check_model(content: bytes) -> None:
    model = tflite_schema().Model.GetRootAs(content, 0)
    if model.SubgraphsLength() != 1:
        raise Unsupported(f"the model has {model.SubgraphsLength()} subgraphs")
    graph = model.Subgraphs(0)
    for index in range(graph.OperatorsLength()):
        if graph.Operators(index).IntermediatesLength():
            raise Unsupported("an operator logs intermediate tensors (LSTM-like)")


def calibrate_in_shards(
    first_pass: Callable[[Callable[[], Iterator[Any]]], bytes], content: bytes, wrapper_path: str, samples: list[Any], shards: int
) -> tuple[bytes, int]:
    """The calibrated model of `samples` and the number of shards that measured it.

    `first_pass(generator_function)` is TensorFlow's calibrate on this process's shard;
    the others run in workers started first, so they overlap it. `Unsupported` when a
    single pass must do it.
    """
    if not samples:
        raise Unsupported("the representative dataset gave no samples")
    _check_model(content)
    _check_samples(samples)
    bounds = shard_bounds(len(samples), shards)
    if len(bounds) < 2:
        raise Unsupported(f"{len(samples)} samples: too few to shard (at least {MIN_SAMPLES_PER_SHARD} per shard)")
    with tempfile.TemporaryDirectory(prefix="tledge-calibration-") as folder:
        workers = [_start_worker(Path(folder), k, content, wrapper_path, samples[a:b]) for k, (a, b) in enumerate(bounds[1:], 1)]
        try:
            start, stop = bounds[0]
            began = time.monotonic()
            results = [bytes(first_pass(lambda: iter(samples[start:stop])))]
            deadline = time.monotonic() + max(_WORKER_GRACE_S, 2 * (time.monotonic() - began))
            results += [_finish_worker(*worker, deadline) for worker in workers]
        finally:
            for process, _, _ in workers:
                if process.poll() is None:  # this pass raised, or a worker hung: it is not needed any more
                    process.kill()
                    process.wait()
    return merge_calibrated(results), len(bounds)


def calibrate_in_workers(content: bytes, wrapper_path: str, samples: list[Any], shards: int) -> tuple[bytes, int]:
    """`calibrate_in_shards` with the first shard in a worker too (one worker when there
    are too few samples to shard): this process needs no TensorFlow
    (trainer.export.backbone_file). (calibrated model, shards)."""

    def first_pass(generate: Callable[[], Iterator[Any]]) -> bytes:
        with tempfile.TemporaryDirectory(prefix="tledge-calibration-") as folder:
            process, result, log = _start_worker(Path(folder), 0, content, wrapper_path, list(generate()))
            try:
                return _finish_worker(process, result, log, time.monotonic() + _ALONE_TIMEOUT_S)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()

    if len(shard_bounds(len(samples), shards)) < 2:
        _check_model(content)
        _check_samples(samples)
        return first_pass(lambda: iter(samples)), 1
    return calibrate_in_shards(first_pass, content, wrapper_path, samples, shards)


def _start_worker(folder: Path, k: int, content: bytes, wrapper_path: str, samples: list[Any]) -> tuple[subprocess.Popen, Path, Path]:
    given, result, log = folder / f"shard{k}.pickle", folder / f"shard{k}.tflite", folder / f"shard{k}.log"
    given.write_bytes(pickle.dumps((content, samples), protocol=pickle.HIGHEST_PROTOCOL))
    command = [sys.executable, str(_WORKER), wrapper_path, str(given), str(result)]
    try:
        with log.open("wb") as stderr:  # a file, not a pipe: TFLite's warnings (one per NaN tensor) never block it
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    except OSError as exc:
        raise Unsupported(f"a calibration worker could not start: {exc}") from None
    return process, result, log


def _finish_worker(process: subprocess.Popen, result: Path, log: Path, deadline: float) -> bytes:
    try:
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise Unsupported("a calibration worker took over twice as long as this process's shard") from None
    if process.returncode != 0 or not result.is_file():
        lines = log.read_text(errors="replace").strip().splitlines() or [f"exit status {process.returncode}"]
        raise Unsupported(f"a calibration worker failed: {lines[-1]}")
    return result.read_bytes()


def _wrapper_path(calibrator: Any) -> str:
    """The file of the compiled module behind a TensorFlow `Calibrator`'s wrapper object."""
    module = sys.modules.get(type(calibrator._calibrator).__module__)  # noqa: SLF001 - TensorFlow's own attribute
    path = getattr(module, "__file__", None)
    if not path or not Path(path).is_file():
        raise Unsupported("TensorFlow's calibration wrapper has no file to load in a worker")
    return str(path)


def _sharded_measure(record: CalibrationRecord, shards: int) -> Callable[[type], Measure]:
    """For TensorFlow's `Calibrator` class `base`: calibration by `calibrate_in_shards`."""

    def for_base(base: type) -> Measure:
        def measure(content: bytes, dataset_gen: Callable[[], Iterator[Any]]) -> bytes:
            try:
                # this process's shard runs on a calibrator of its own: the swapped one's
                # logger stays empty for the single pass, should a shard fail
                first = base(content)
                merged, used = calibrate_in_shards(first.calibrate, content, _wrapper_path(first), list(dataset_gen()), shards)
            except (ExportError, Unsupported):  # ExportError: the samples' own (an unusable calibration image), the same in one pass
                raise
            except Exception as exc:  # noqa: BLE001 - TensorFlow's pass on a shard failed: the single pass raises it in full
                lines = str(exc).strip().splitlines() or [repr(exc)]
                raise Unsupported(f"a shard failed: {lines[-1]}") from None
            record.shards = used
            return merged

        return measure

    return for_base


@contextmanager
def sharded_calibration(shards: int | None = None) -> Iterator[CalibrationRecord]:
    """For the block, TensorFlow's converter calibrates with TensorFlow's calibrator on
    `shards` shards of the samples at once (default: `default_shards()`), with the single pass's
    exact result; TensorFlow's class is put back on exit, also on error.

    The record's `used` is TENSORFLOW either way; `shards` says how many measured the
    ranges (1 with a `fallback_reason` when the single pass ran).
    """
    record = CalibrationRecord()
    wanted = default_shards() if shards is None else shards
    if wanted < 2:
        record.fell_back("one shard asked for (one CPU, or $" + SHARDS_ENV + "=1)")
        yield record
        return
    with swapped_calibrator(record, _sharded_measure(record, wanted)) as used:
        yield used
