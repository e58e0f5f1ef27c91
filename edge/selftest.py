"""The bundle's golden self-test: reference inputs and the exported file's outputs on them.

`tledge export` stores a few of the model's own input tensors (val images after the
device's preprocess, one per class where possible) in ``selftest.npz`` beside the model,
with the raw outputs the exported file gave on them, and lists the file with its sha256
and the comparison tolerance under ``"selftest"`` in manifest.json. A device runs the
same tensors through its own interpreter (its wheel, threads, delegate) and compares:

    integer outputs (uint8 / int8)   |got - expected| <= `quantized_steps` codes (8)
    float outputs                    |got - expected| <= float_atol + float_rtol * |expected|

The tolerance comes from a measurement (scripts/bench_selftest_tolerance.py; the
figures are in BENCHMARKS.md, not here): other thread counts gave identical outputs, but
another kernel set (LiteRT's builtin kernels instead of XNNPACK, as an old wheel or
another CPU may use) moves a uint8 model's outputs by a few codes. The tolerance admits
what a legitimate runtime does and refuses what a wrong wheel, a miscompiled delegate or
a wrong input makes: outputs far off.

`run_selftest` takes anything with the classifier's `invoke` (dequantized scores) and its
`output_quant` / `output_dtype`; `load_selftest` verifies the file against the manifest.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge.bundle import ModelInfo, sha256_bytes
from edge.errors import SelfTestError

SELFTEST_NAME = "selftest.npz"
MANIFEST_KEY = "selftest"
#: Arrays in selftest.npz: inputs (N, H, W, 3) in the model's input dtype, outputs (N, C)
#: raw in the model's output dtype, classes (N,) the true class of each input (-1: unknown).
ARRAYS = ("inputs", "outputs", "classes")
#: Largest self-test file read (bytes): 8 inputs at 224 px are about 1.2 MB.
MAX_SELFTEST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Tolerance:
    """How far a device's outputs may be from the export's (see the module docstring)."""

    quantized_steps: int = 8  # integer outputs: codes (quantization steps)
    float_atol: float = 1e-3  # float outputs: absolute, in score units (probabilities 0..1)
    float_rtol: float = 1e-2  # float outputs: relative to the expected score

    def to_dict(self) -> dict[str, Any]:
        return {"quantized_steps": self.quantized_steps, "float_atol": self.float_atol, "float_rtol": self.float_rtol}

    @classmethod
    def from_dict(cls, value: Any) -> "Tolerance":
        """The manifest's tolerance; missing keys take the defaults."""
        if not isinstance(value, dict):
            return cls()
        default = cls()
        try:
            return cls(
                quantized_steps=int(value.get("quantized_steps", default.quantized_steps)),
                float_atol=float(value.get("float_atol", default.float_atol)),
                float_rtol=float(value.get("float_rtol", default.float_rtol)),
            )
        except (TypeError, ValueError):
            raise SelfTestError("manifest.json: \"selftest.tolerance\" is malformed; re-export the bundle") from None


@dataclass(frozen=True)
class SelfTestData:
    """The reference tensors of one bundle, verified against its manifest."""

    inputs: np.ndarray = field(repr=False)
    outputs: np.ndarray = field(repr=False)
    classes: np.ndarray = field(repr=False)
    tolerance: Tolerance
    sha256: str

    @property
    def count(self) -> int:
        return int(self.inputs.shape[0])


@dataclass(frozen=True)
class InputResult:
    """One reference input: how far this device's outputs were from the export's."""

    index: int
    true_class: int  # -1 when unknown
    expected_top1: int
    got_top1: int
    max_diff: float  # in the output's units: codes for integer outputs, scores for float
    allowed: float  # the tolerance at the worst element, same units
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "true_class": self.true_class, "expected_top1": self.expected_top1, "got_top1": self.got_top1,
            "max_diff": round(self.max_diff, 8), "allowed": round(self.allowed, 8), "passed": self.passed,
        }


@dataclass(frozen=True)
class SelfTestReport:
    """All inputs of one self-test run."""

    results: tuple[InputResult, ...]
    units: str  # "codes" (integer outputs) or "score" (float outputs)
    tolerance: Tolerance

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> tuple[InputResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    def summary(self) -> str:
        worst = max(self.results, key=lambda r: r.max_diff / r.allowed if r.allowed else r.max_diff)
        state = "passed" if self.passed else f"FAILED on {len(self.failed)} of {len(self.results)} inputs"
        return f"{len(self.results)} reference inputs {state} (largest difference {worst.max_diff:g} {self.units}, allowed {worst.allowed:g})"

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "units": self.units, "tolerance": self.tolerance.to_dict(), "inputs": [r.to_dict() for r in self.results]}


class ScoringModel(Protocol):
    """What the self-test needs of a classifier (`edge.classifier.Classifier` has it)."""

    input_size: tuple[int, int]
    input_dtype: np.dtype
    output_dtype: np.dtype
    output_quant: tuple[float, int]

    def invoke(self, tensor: np.ndarray) -> np.ndarray: ...


FAIL_REMEDY = (
    "this device does not run the model the way export verified it: check the interpreter package and version "
    "(`tledge doctor`), try without --delegate, copy the bundle again, or re-export it with this runtime"
)


def has_selftest(info: ModelInfo) -> bool:
    """True when the bundle's manifest lists a self-test (bundles from before it do not)."""
    return info.is_tledge_bundle and MANIFEST_KEY in info.manifest


def selftest_path(info: ModelInfo) -> Path:
    """Where the bundle's self-test file is (beside the model)."""
    return info.model_path.parent / _entry(info).get("file", SELFTEST_NAME)


def _entry(info: ModelInfo) -> dict[str, Any]:
    entry = info.manifest.get(MANIFEST_KEY)
    if not isinstance(entry, dict):
        raise SelfTestError(f"{info.model_path.parent}: manifest.json's \"{MANIFEST_KEY}\" is not an object; re-export the bundle")
    name = entry.get("file", SELFTEST_NAME)
    if not isinstance(name, str) or not name or name != Path(name).name or name in (".", ".."):
        raise SelfTestError(f"{info.model_path.parent}: \"{MANIFEST_KEY}.file\" must be a file name inside the bundle folder; re-export the bundle")
    return entry


def load_selftest(info: ModelInfo) -> SelfTestData:
    """Read the bundle's self-test file, check it against the manifest's sha256, parse it.

    Raises `SelfTestError` (a `ModelError`) with a remedy when it is missing, damaged or
    malformed.
    """
    entry = _entry(info)
    path = selftest_path(info)
    try:
        size = path.stat().st_size
        if size > MAX_SELFTEST_BYTES:
            raise SelfTestError(f"{path} is {size} bytes, more than a self-test file can be; copy the bundle again or re-export it")
        data = path.read_bytes()
    except FileNotFoundError:
        raise SelfTestError(f"{path} is missing (manifest.json lists a self-test); copy the whole bundle folder again or re-export it") from None
    except OSError as exc:
        raise SelfTestError(f"Cannot read {path}: {exc.strerror or exc}") from None
    expected = str(entry.get("sha256", ""))
    actual = sha256_bytes(data)
    if actual != expected:
        raise SelfTestError(
            f"{path} does not match its manifest (sha256 {actual[:12]}… != {expected[:12]}…): the file was changed or "
            "damaged in transit; copy the bundle again or re-export it"
        )
    arrays = parse_selftest(data, path)
    return SelfTestData(*arrays, tolerance=Tolerance.from_dict(entry.get("tolerance")), sha256=actual)


def parse_selftest(data: bytes, where: Path | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, outputs, classes) from the bytes of a selftest.npz; no pickles are loaded."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = [name for name in ARRAYS if name not in npz.files]
            if missing:
                raise SelfTestError(f"{where}: the self-test file lacks {', '.join(missing)}; re-export the bundle")
            inputs, outputs, classes = (np.asarray(npz[name]) for name in ARRAYS)
    except SelfTestError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise SelfTestError(f"{where}: the self-test file is corrupt ({exc}); copy the bundle again or re-export it") from None
    if inputs.ndim != 4 or inputs.shape[0] < 1 or inputs.shape[3] != 3 or outputs.ndim != 2 or outputs.shape[0] != inputs.shape[0]:
        raise SelfTestError(f"{where}: the self-test arrays have shapes {inputs.shape} / {outputs.shape}, not (N, H, W, 3) / (N, C); re-export the bundle")
    if classes.shape != (inputs.shape[0],):
        classes = np.full(inputs.shape[0], -1, dtype=np.int64)
    return inputs, outputs, classes


def _check_fits(model: ScoringModel, data: SelfTestData, where: str) -> None:
    height, width = model.input_size
    if data.inputs.shape[1:3] != (height, width) or data.inputs.dtype != model.input_dtype:
        raise SelfTestError(
            f"{where}: the self-test inputs are {data.inputs.dtype} {data.inputs.shape[2]}x{data.inputs.shape[1]}, but the model takes "
            f"{model.input_dtype} {width}x{height}: the self-test was made for another model; copy the bundle again or re-export it"
        )
    if data.outputs.dtype != model.output_dtype:
        raise SelfTestError(f"{where}: the self-test outputs are {data.outputs.dtype}, the model gives {model.output_dtype}; re-export the bundle")


def run_selftest(model: ScoringModel, data: SelfTestData, where: str = "the bundle") -> SelfTestReport:
    """Run every reference input through `model` and compare with the stored outputs."""
    _check_fits(model, data, where)
    integer = np.issubdtype(model.output_dtype, np.integer)
    scale = float(model.output_quant[0] or 1.0) if integer else 1.0
    zero_point = int(model.output_quant[1]) if integer else 0
    results = []
    for i in range(data.count):
        got = model.invoke(data.inputs[i : i + 1])
        if got.shape != data.outputs[i].shape:
            raise SelfTestError(f"{where}: the model gives {got.shape[0]} scores, the self-test expects {data.outputs.shape[1]}; re-export the bundle")
        expected = data.outputs[i]
        if integer:
            # `invoke` dequantizes; back to codes (exact: dequantize is affine with this scale)
            got_codes = np.round(got.astype(np.float64) / scale + zero_point)
            diff = np.abs(got_codes - expected.astype(np.float64))
            allowed_each = np.full(diff.shape, float(data.tolerance.quantized_steps))
        else:
            diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
            allowed_each = data.tolerance.float_atol + data.tolerance.float_rtol * np.abs(expected.astype(np.float64))
        worst = int(np.argmax(diff - allowed_each))
        results.append(
            InputResult(
                index=i,
                true_class=int(data.classes[i]),
                expected_top1=int(np.argmax(expected)),
                got_top1=int(np.argmax(got)),
                max_diff=float(diff.max()),
                allowed=float(allowed_each[worst]),
                passed=bool(np.all(diff <= allowed_each)),
            )
        )
    return SelfTestReport(tuple(results), "codes" if integer else "score", data.tolerance)


def failure_message(report: SelfTestReport, where: str) -> str:
    """The doctor's message for a failed self-test: which inputs, how far off, the fix."""
    rows = "; ".join(f"input {r.index}: off by {r.max_diff:g} {report.units} (allowed {r.allowed:g})" for r in report.failed[:4])
    more = f" and {len(report.failed) - 4} more" if len(report.failed) > 4 else ""
    return f"{where}: the self-test failed on {len(report.failed)} of {len(report.results)} reference inputs ({rows}{more}): {FAIL_REMEDY}"


def verify_classifier(model: ScoringModel, info: ModelInfo) -> SelfTestReport | None:
    """The start-up check of `run` / `predict` / `--watch`: the bundle's self-test on
    `model` (the interpreter that will serve). None when the bundle has no self-test.

    Raises `SelfTestError` with the doctor's message when it fails.
    """
    if not has_selftest(info):
        return None
    where = str(info.model_path.parent)
    report = run_selftest(model, load_selftest(info), where)
    if not report.passed:
        raise SelfTestError(failure_message(report, where))
    return report


def no_selftest_note(info: ModelInfo) -> str:
    """What `run` / `predict` say about a model without a self-test (then they run it)."""
    what = "a plain .tflite" if not info.is_tledge_bundle else "a bundle exported before self-tests existed"
    return f"{info.model_path} is {what}: no self-test to run (re-export with this tledge to get one)"


__all__ = [
    "FAIL_REMEDY", "InputResult", "SELFTEST_NAME", "SelfTestData", "SelfTestReport", "Tolerance",
    "failure_message", "has_selftest", "load_selftest", "no_selftest_note", "parse_selftest", "run_selftest",
    "selftest_path", "verify_classifier",
]
