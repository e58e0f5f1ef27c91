"""`tledge doctor`: is this device running the model the way export verified it?

Each check gives a status (pass / fail / skip), what was found, and for a failure a
plain fix. `diagnose` runs them in order; a check that cannot run because an earlier one
failed is skipped with the reason. Nothing here raises for a failed check: the report
says it, and the CLI turns `report.ok` into the exit code.

    python      Python version and platform
    interpreter which TFLite interpreter package is installed, and its version
    threads     interpreter threads used, and CPU cores
    delegate    the --delegate library loads (only when given)
    xnnpack     whether the default CPU delegate (XNNPACK) runs the model
    checksums   the model's and the self-test's sha256 against the manifest
    selftest[i] each reference input: outputs equal to the export's within the tolerance
    source      the camera / stream opens, delivers frames, and at what rate (--source)
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from edge.errors import TledgeError

MIN_PYTHON = (3, 10)
PACKAGES = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}


class Status(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"  # not applicable, or blocked by an earlier failure; does not fail the run


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class DoctorOptions:
    """What to check beyond the platform."""

    bundle: Path | None = None
    labels: Path | None = None
    threads: int | None = None
    delegate: str | None = None
    source: str | None = None
    source_seconds: float = 3.0  # how long frames are counted (seconds)
    source_frames: int = 30  # ... or until this many arrived


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(c.status is not Status.FAIL for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.to_dict() for c in self.checks]}

    def lines(self) -> list[str]:
        out = []
        for c in self.checks:
            out.append(f"{c.status.value.upper():4}  {c.name}: {c.detail}")
            if c.status is Status.FAIL and c.fix:
                out.append(f"      fix: {c.fix}")
        failed = sum(c.status is Status.FAIL for c in self.checks)
        out.append("all checks passed" if self.ok else f"{failed} check(s) failed")
        return out


def check_python() -> Check:
    version = ".".join(str(v) for v in sys.version_info[:3])
    detail = f"Python {version} on {platform.system()} {platform.release()} ({platform.machine()})"
    if sys.version_info[:2] < MIN_PYTHON:
        return Check("python", Status.FAIL, detail, f"tledge needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer")
    return Check("python", Status.PASS, detail)


def check_interpreter() -> tuple[Check, Any]:
    from edge.runtime import INSTALL_HINT, available_backends

    backends = available_backends()
    if not backends:
        return Check("interpreter", Status.FAIL, "no TFLite interpreter package is installed", INSTALL_HINT), None
    chosen = backends[0]
    package = PACKAGES.get(chosen.name, chosen.name)
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown version"
    others = [b.name for b in backends[1:]]
    detail = f"{package} {version} (module {chosen.name})" + (f"; also installed: {', '.join(others)}" if others else "")
    return Check("interpreter", Status.PASS, detail), chosen


def check_threads(threads: int | None) -> Check:
    import os

    from edge.runtime import default_threads

    cores = os.cpu_count() or 1
    used = threads or default_threads()
    detail = f"{used} interpreter thread(s) on {cores} CPU core(s)" + (" (--threads)" if threads else " (default)")
    if used > cores:
        return Check("threads", Status.FAIL, detail, f"use --threads {max(1, cores - 1)} or fewer: more threads than cores slows inference down")
    return Check("threads", Status.PASS, detail)


def xnnpack_active(interpreter: Any) -> bool:
    """True when the default CPU delegate took over part of the graph: LiteRT then lists
    DELEGATE nodes in its execution plan (the op table of an undelegated model has none)."""
    try:
        ops = interpreter._get_ops_details()  # the only view of the execution plan the Python API gives
    except (AttributeError, ValueError, RuntimeError):
        return False
    return any(op.get("op_name") == "DELEGATE" for op in ops)


def _model_checks(options: DoctorOptions) -> list[Check]:
    """Checksums, delegate, XNNPACK and the self-test of `options.bundle`."""
    from edge.bundle import load_model_info
    from edge.classifier import Classifier
    from edge.errors import DelegateError
    from edge.selftest import FAIL_REMEDY, has_selftest, load_selftest, no_selftest_note, run_selftest, selftest_path

    checks: list[Check] = []
    try:
        info = load_model_info(options.bundle, labels_path=options.labels)  # type: ignore[arg-type]
    except TledgeError as exc:
        return [Check("checksums", Status.FAIL, str(exc), "copy the bundle folder again (e.g. `tledge deploy`), or re-export it")]
    selftest_data = None
    if has_selftest(info):
        try:
            selftest_data = load_selftest(info)
        except TledgeError as exc:
            return [Check("checksums", Status.FAIL, str(exc), "copy the bundle folder again (e.g. `tledge deploy`), or re-export it")]
        checks.append(Check("checksums", Status.PASS, f"{info.model_path.name} and {selftest_path(info).name} match manifest.json (sha256)"))
    elif info.is_tledge_bundle:
        checks.append(Check("checksums", Status.PASS, f"{info.model_path.name} matches manifest.json (sha256)"))
    else:
        checks.append(Check("checksums", Status.SKIP, f"{info.model_path.name} is a plain .tflite: no manifest to check against"))
    try:
        classifier = Classifier(info, threads=options.threads, delegate=options.delegate)
    except DelegateError as exc:
        return [*checks, Check("delegate", Status.FAIL, str(exc), "install the delegate's library, fix the name or path, or leave out --delegate")]
    except TledgeError as exc:
        return [*checks, Check("model", Status.FAIL, str(exc), "copy the bundle again or re-export it")]
    if options.delegate:
        checks.append(Check("delegate", Status.PASS, f"{options.delegate} loaded"))
    if xnnpack_active(classifier.interpreter):
        what = "a delegate runs the graph (XNNPACK is the CPU default)" if options.delegate else "XNNPACK runs the graph on the CPU"
        checks.append(Check("xnnpack", Status.PASS, what))
    else:
        checks.append(Check("xnnpack", Status.FAIL, "no delegate is active: the slow reference kernels run every op",
                            "install a current interpreter (pip install -U ai-edge-litert); XNNPACK is on by default there"))
    if selftest_data is None:
        checks.append(Check("selftest", Status.SKIP, no_selftest_note(info)))
        return checks
    try:
        report = run_selftest(classifier, selftest_data, str(info.model_path.parent))
    except TledgeError as exc:
        return [*checks, Check("selftest", Status.FAIL, str(exc), "re-export the bundle")]
    labels = classifier.labels
    for r in report.results:
        truth = labels[r.true_class] if 0 <= r.true_class < len(labels) else "?"
        detail = (f"reference input of class {truth}: largest difference {r.max_diff:g} {report.units} (allowed {r.allowed:g}); "
                  f"top-1 {labels[r.got_top1]} (export: {labels[r.expected_top1]})")
        checks.append(Check(f"selftest[{r.index}]", Status.PASS if r.passed else Status.FAIL, detail, "" if r.passed else FAIL_REMEDY))
    return checks


def check_source(spec: str, seconds: float, max_frames: int) -> Check:
    """Open the source, count frames for `seconds` (or `max_frames`), report the rate."""
    from edge.sources import open_source

    try:
        source = open_source(spec)
        source.open()
    except TledgeError as exc:
        return Check("source", Status.FAIL, str(exc), "check the camera index or device path, the cable, the URL, or permissions (group video)")
    frames: list[tuple[float, tuple[int, ...]]] = []
    error: list[str] = []

    def read() -> None:
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline and len(frames) < max_frames:
                frame = source.read()
                if frame is None:
                    break
                frames.append((time.monotonic(), frame.shape))
        except TledgeError as exc:
            error.append(str(exc))

    reader = threading.Thread(target=read, name="tledge-doctor-source", daemon=True)
    reader.start()
    reader.join(seconds + 5.0)  # a read blocked on a dead camera does not hang the doctor
    if not reader.is_alive():
        source.close()
    if not frames:
        why = error[0] if error else ("no frame arrived" if not reader.is_alive() else f"no frame within {seconds + 5:.0f} s")
        return Check("source", Status.FAIL, f"{source.name} opened but delivered no frame: {why}", "check that the camera is not in use by another program, and its cable / the stream's URL")
    height, width = frames[-1][1][:2]
    rate = (len(frames) - 1) / (frames[-1][0] - frames[0][0]) if len(frames) > 1 and frames[-1][0] > frames[0][0] else 0.0
    return Check("source", Status.PASS, f"{source.name}: {len(frames)} frame(s) of {width}x{height} at {rate:.1f} frames/s")


def diagnose(options: DoctorOptions) -> Report:
    """Run every check that applies; see the module docstring."""
    checks = [check_python()]
    interpreter_check, backend = check_interpreter()
    checks += [interpreter_check, check_threads(options.threads)]
    if options.bundle is not None:
        if backend is None:
            checks.append(Check("model", Status.SKIP, "no interpreter to run the model with (see above)"))
        else:
            checks += _model_checks(options)
    else:
        checks.append(Check("xnnpack", Status.SKIP, "give a bundle or .tflite to see which kernels run it"))
    if options.source is not None:
        checks.append(check_source(options.source, options.source_seconds, options.source_frames))
    return Report(tuple(checks))
