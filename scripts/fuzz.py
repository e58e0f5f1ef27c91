#!/usr/bin/env python
"""Bounded fuzzing of what tledge reads from users: image files and model bundles.

    scripts/fuzz.py --seconds 60                  # every target, 60 s each
    scripts/fuzz.py --target images --seconds 300 --seed 7

Hypothesis mutates valid inputs (flipped, overwritten, deleted, inserted and duplicated
bytes; truncation; JSON values swapped for random ones) and feeds them to:

- ``images``: `edge.images.decode_rgb` on mutated PNG / JPEG / GIF / BMP / WebP bytes;
- ``bundle``: `edge.bundle.load_model_info` on a bundle folder whose model.tflite,
  manifest.json, embedded tledge.json / labels.txt or labels file was mutated;
- ``classifier``: `edge.classifier.Classifier` + one `classify` on a mutated .tflite, in
  a child process, so a crash inside the interpreter (a native library) is caught and
  reported with the input that caused it instead of killing the run.

Only `TledgeError` subclasses may escape; anything else is a failure, shrunk by
Hypothesis to a small example and saved under scripts/out/fuzz-failures/. The summary
(examples, failures, slowest example) is printed as JSON and written to
scripts/out/fuzz.json. Exit code 1 when any target failed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "scripts" / "out"
sys.path.insert(0, str(ROOT / "tests" / "reliability"))  # the corpus and tiny-model helpers
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from edge.errors import TledgeError  # noqa: E402

TARGETS = ("images", "bundle", "classifier")
BATCH = 100  # Hypothesis examples per batch; batches repeat with new seeds until time is up
SLOW_MS = 2000.0  # an input slower than this is saved for a look (a hang in the making)


@dataclass
class Failure:
    """One input that made something other than `TledgeError` escape."""

    error: str
    message: str
    saved_as: str


@dataclass
class TargetReport:
    """The outcome of fuzzing one target."""

    target: str
    seconds: float = 0.0
    examples: int = 0
    refused: int = 0  # examples that raised a TledgeError (the expected outcome for junk)
    accepted: int = 0  # examples that decoded / loaded fine
    slowest_ms: float = 0.0
    slowest_saved_as: str = ""  # the slowest input, kept when it took over SLOW_MS
    failures: list[Failure] = field(default_factory=list)
    crashes: list[Failure] = field(default_factory=list)  # child process killed by a signal


# -- mutations ----------------------------------------------------------------------------

MUTATION = st.tuples(
    st.sampled_from(["flip", "set", "delete", "insert", "truncate", "duplicate"]),
    st.floats(0.0, 1.0),  # position, as a fraction of the length
    st.binary(min_size=1, max_size=16),
)


def mutate(data: bytes, ops: list[tuple[str, float, bytes]]) -> bytes:
    """Apply byte-level mutations; positions are fractions so shrinking stays meaningful."""
    out = bytearray(data)
    for kind, where, chunk in ops:
        i = min(len(out), int(where * len(out)))
        if kind == "flip" and i < len(out):
            out[i] ^= chunk[0] or 0x80
        elif kind == "set":
            out[i : i + len(chunk)] = chunk
        elif kind == "delete":
            del out[i : i + len(chunk) * 8]
        elif kind == "insert":
            out[i:i] = chunk
        elif kind == "truncate":
            del out[i:]
        elif kind == "duplicate":
            out[i:i] = out[i : i + len(chunk) * 4]
    return bytes(out)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def replace_json_value(doc: Any, path: list[int], value: Any) -> Any:
    """Replace the node reached by following `path` (indices into keys / items) with `value`."""
    if not path or not isinstance(doc, (dict, list)) or not doc:
        return value
    if isinstance(doc, dict):
        key = sorted(doc)[path[0] % len(doc)]
        return {**doc, key: replace_json_value(doc[key], path[1:], value)}
    index = path[0] % len(doc)
    return [*doc[:index], replace_json_value(doc[index], path[1:], value), *doc[index + 1 :]]


# -- the driver ---------------------------------------------------------------------------

def run_target(name: str, strategy: st.SearchStrategy[Any], check: Callable[[Any], bool], seconds: float, first_seed: int) -> TargetReport:
    """Run `check` on examples of `strategy` in seeded batches until `seconds` pass.

    `check` returns True when the input was accepted, False when it raised `TledgeError`;
    any other exception is a failure, which Hypothesis shrinks before it is recorded.
    """
    report = TargetReport(name)
    started = time.monotonic()
    batch = 0
    seen: set[str] = set()
    while time.monotonic() - started < seconds:
        last: list[Any] = [None]

        @seed(first_seed * 1_000_003 + batch)
        @settings(max_examples=BATCH, deadline=None, database=None, derandomize=False, report_multiple_bugs=False,
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def one(example: Any) -> None:
            last[0] = example
            t0 = time.perf_counter()
            try:
                ok = check(example)
            finally:
                took_ms = (time.perf_counter() - t0) * 1000.0
                if took_ms > report.slowest_ms:
                    report.slowest_ms = took_ms
                    if took_ms > SLOW_MS:
                        report.slowest_saved_as = save_failure(f"{name}-slow", example)
                report.examples += 1
            if ok:
                report.accepted += 1
            else:
                report.refused += 1

        try:
            one()
        except Exception as exc:  # noqa: BLE001 - a failure is what we are looking for
            key = f"{type(exc).__name__}: {str(exc)[:120]}"
            if key not in seen:
                seen.add(key)
                report.failures.append(Failure(type(exc).__name__, str(exc)[:300], save_failure(name, last[0])))
        batch += 1
        if time.monotonic() - started + 0.05 > seconds:
            break
    report.seconds = round(time.monotonic() - started, 1)
    report.slowest_ms = round(report.slowest_ms, 1)
    return report


def save_failure(target: str, example: Any) -> str:
    folder = OUT / "fuzz-failures"
    folder.mkdir(parents=True, exist_ok=True)
    data = example if isinstance(example, bytes) else repr(example).encode("utf-8", "backslashreplace")
    path = folder / f"{target}-{hashlib.sha256(data).hexdigest()[:12]}.bin"
    path.write_bytes(data)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def accepted(call: Callable[[], Any]) -> bool:
    """True if `call` succeeds, False if it raises `TledgeError`; anything else escapes."""
    try:
        call()
    except TledgeError:
        return False
    return True


# -- target: images -----------------------------------------------------------------------

def image_seeds() -> list[bytes]:
    """Small valid files in every decoded format and mode."""
    from bad_inputs import cmyk_jpeg, exif_rotated_jpeg, gradient_rgb, palette_png, png16, rgba_png

    rgb = Image.fromarray(gradient_rgb(12, 16))
    seeds = [cmyk_jpeg(), exif_rotated_jpeg(6, 12, 16), palette_png(transparent=True), png16(), rgba_png()]
    for fmt, args in (("PNG", {}), ("JPEG", {"quality": 80}), ("JPEG", {"progressive": True}), ("GIF", {}), ("BMP", {}), ("WEBP", {"quality": 60})):
        buffer = io.BytesIO()
        rgb.save(buffer, format=fmt, **args)
        seeds.append(buffer.getvalue())
    return seeds


def fuzz_images(seconds: float, first_seed: int = 0) -> TargetReport:
    from edge.images import decode_rgb

    seeds = image_seeds()
    strategy = st.tuples(st.sampled_from(seeds), st.lists(MUTATION, min_size=1, max_size=6)).map(lambda s: mutate(*s))

    def check(data: bytes) -> bool:
        def decode() -> None:
            rgb = decode_rgb(data, "fuzz")
            if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or not rgb.flags["C_CONTIGUOUS"]:
                raise AssertionError(f"decode_rgb returned {rgb.dtype} {rgb.shape}")

        return accepted(decode)

    return run_target("images", strategy, check, seconds, first_seed)


# -- target: bundle -----------------------------------------------------------------------

def tiny_model() -> bytes:
    """A small real image classifier: made with TensorFlow, or TLEDGE_FUZZ_MODEL."""
    given_path = os.environ.get("TLEDGE_FUZZ_MODEL")
    if given_path:
        return Path(given_path).read_bytes()
    from tiny_models import image_classifier_tflite

    return image_classifier_tflite(3, 16)


def bundle_parts(model: bytes) -> dict[str, Any]:
    from tiny_models import bundle_info

    labels = ["cat", "dog", "bird"]
    return {"model": model, "info": bundle_info(labels), "labels_txt": "cat\ndog\nbird\n".encode()}


def bundle_examples(parts: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A description of one damaged bundle: what to mutate and how to open it."""
    return st.fixed_dictionaries(
        {
            "part": st.sampled_from(["model", "manifest_bytes", "manifest_json", "embedded_json", "embedded_labels", "labels_file", "zip"]),
            "ops": st.lists(MUTATION, min_size=1, max_size=5),
            "json_path": st.lists(st.integers(0, 50), min_size=1, max_size=3),
            "json_value": JSON_VALUES,
            "open_as": st.sampled_from(["folder", "manifest", "model", "model_with_labels"]),
            "fix_sha256": st.booleans(),  # recompute the manifest's hash so later checks run
        }
    )


def build_bundle(parts: dict[str, Any], ex: dict[str, Any], folder: Path) -> Path:
    """Write the (damaged) bundle described by `ex` into `folder`; return the path to open."""
    from tiny_models import with_embedded

    info, labels_txt = parts["info"], parts["labels_txt"]
    embedded_json = json.dumps(info).encode()
    if ex["part"] == "embedded_json":
        embedded_json = json.dumps(replace_json_value(info, ex["json_path"], ex["json_value"]), allow_nan=True).encode()
    embedded_labels = mutate(labels_txt, ex["ops"]) if ex["part"] == "embedded_labels" else labels_txt
    model = with_embedded(parts["model"], {"labels.txt": embedded_labels, "tledge.json": embedded_json})
    if ex["part"] == "model":
        model = mutate(parts["model"], ex["ops"]) + model[len(parts["model"]) :]
    elif ex["part"] == "zip":
        model = parts["model"] + mutate(model[len(parts["model"]) :], ex["ops"])
    manifest = {**info, "model": {"file": "model.tflite", "sha256": "0" * 64, "size_bytes": len(model)}}
    if ex["fix_sha256"] or ex["part"] != "model":
        manifest["model"]["sha256"] = hashlib.sha256(model).hexdigest()
    if ex["part"] == "manifest_json":
        manifest = replace_json_value(manifest, ex["json_path"], ex["json_value"])
    manifest_bytes = json.dumps(manifest, allow_nan=True).encode()
    if ex["part"] == "manifest_bytes":
        manifest_bytes = mutate(manifest_bytes, ex["ops"])
    (folder / "model.tflite").write_bytes(model)
    (folder / "manifest.json").write_bytes(manifest_bytes)
    labels_file = mutate(labels_txt, ex["ops"]) if ex["part"] == "labels_file" else labels_txt
    (folder / "labels.txt").write_bytes(labels_file)
    return {"folder": folder, "manifest": folder / "manifest.json"}.get(ex["open_as"], folder / "model.tflite")


def fuzz_bundle(seconds: float, first_seed: int = 0, model: bytes | None = None) -> TargetReport:
    from edge.bundle import load_model_info

    parts = bundle_parts(model or tiny_model())
    folder = Path(tempfile.mkdtemp(prefix="tledge-fuzz-bundle-"))

    def check(ex: dict[str, Any]) -> bool:
        path = build_bundle(parts, ex, folder)
        labels = folder / "labels.txt" if ex["open_as"] == "model_with_labels" else None
        return accepted(lambda: load_model_info(path, labels_path=labels))

    try:
        return run_target("bundle", bundle_examples(parts), check, seconds, first_seed)
    finally:
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()


# -- target: classifier (in a child process) ----------------------------------------------

def classifier_worker(seconds: float, first_seed: int, current: Path, model_path: Path) -> TargetReport:
    """Runs in the child: mutate the bare .tflite, build a Classifier, classify one frame.

    Each input is written to `current` before it is tried, so the parent can name the
    input that crashed the interpreter.
    """
    from edge.bundle import load_model_info
    from edge.classifier import Classifier

    model = model_path.read_bytes()
    frame = np.zeros((24, 32, 3), np.uint8)
    strategy = st.lists(MUTATION, min_size=1, max_size=4).map(lambda ops: mutate(model, ops))
    path = current.with_suffix(".tflite")

    def check(data: bytes) -> bool:
        current.write_bytes(data)
        path.write_bytes(data)

        def run() -> None:
            Classifier(load_model_info(path), threads=1).classify(frame)

        return accepted(run)

    return run_target("classifier", strategy, check, seconds, first_seed)


def fuzz_classifier(seconds: float, first_seed: int = 0, model: bytes | None = None, hang_s: float = 60.0) -> TargetReport:
    """Run `classifier_worker` in children until `seconds` pass. A child killed by a signal
    is a crash and one that overruns by `hang_s` a hang; either is recorded with the input
    it was on, and a new child continues with the next seed."""
    total = TargetReport("classifier")
    work = Path(tempfile.mkdtemp(prefix="tledge-fuzz-clf-"))
    model_path = work / "seed.tflite"
    model_path.write_bytes(model or tiny_model())
    started = time.monotonic()
    deadline = started + seconds
    run_seed = first_seed
    while time.monotonic() < deadline - 1.0:
        current, result = work / "current.bin", work / "result.json"
        result.unlink(missing_ok=True)
        remaining = deadline - time.monotonic()
        cmd = [sys.executable, __file__, "--worker", "--seconds", f"{remaining:.1f}", "--seed", str(run_seed),
               "--current", str(current), "--model", str(model_path), "--result", str(result)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _, stderr = proc.communicate(timeout=remaining + hang_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
            stuck = current.read_bytes() if current.is_file() else b""
            total.crashes.append(Failure("hang", f"worker still busy {hang_s:.0f} s past its time", save_failure("classifier-hang", stuck)))
            run_seed += 1
            continue
        if proc.returncode != 0 or not result.is_file():
            crash_input = current.read_bytes() if current.is_file() else b""
            reason = signal.Signals(-proc.returncode).name if proc.returncode < 0 else f"exit {proc.returncode}"
            total.crashes.append(Failure("crash", f"worker died: {reason}; {stderr[-300:]}", save_failure("classifier", crash_input)))
            run_seed += 1
            continue
        part = json.loads(result.read_text())
        for key in ("examples", "refused", "accepted"):
            setattr(total, key, getattr(total, key) + part[key])
        if part["slowest_ms"] > total.slowest_ms:
            total.slowest_ms, total.slowest_saved_as = part["slowest_ms"], part["slowest_saved_as"]
        total.failures += [Failure(**f) for f in part["failures"]]
        run_seed += 1
    total.seconds = round(time.monotonic() - started, 1)
    total.slowest_ms = round(total.slowest_ms, 1)
    shutil.rmtree(work, ignore_errors=True)
    return total


# -- command line -------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="time per target (s)")
    parser.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, help="a .tflite image classifier to mutate (default: a tiny one made with TensorFlow)")
    parser.add_argument("--out", type=Path, default=OUT / "fuzz.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--current", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        report = classifier_worker(args.seconds, args.seed, args.current, args.model)
        args.result.write_text(json.dumps(asdict(report)))
        return 0
    model = args.model.read_bytes() if args.model else None
    if model is None and args.target in ("bundle", "classifier", "all"):
        model = tiny_model()
    runners = {
        "images": lambda: fuzz_images(args.seconds, args.seed),
        "bundle": lambda: fuzz_bundle(args.seconds, args.seed, model),
        "classifier": lambda: fuzz_classifier(args.seconds, args.seed, model),
    }
    chosen = TARGETS if args.target == "all" else (args.target,)
    reports = [runners[name]() for name in chosen]
    summary = {"seconds_per_target": args.seconds, "seed": args.seed, "targets": [asdict(r) for r in reports]}
    text = json.dumps(summary, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    return 1 if any(r.failures or r.crashes for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
