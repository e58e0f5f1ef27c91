#!/usr/bin/env python3
"""How far do a model's outputs move between interpreter thread counts? The evidence
behind the self-test tolerance (edge/selftest.py: 1 code for int8, atol+rtol for float).

For each bundle with a self-test: its reference inputs are run with 1, 2 and 4 threads
and compared with the outputs stored at export (codes for integer outputs, scores for
float). With --google, the real uint8 ImageNet model in ../shared runs on the photos in
../shared/images the same way (compared with its own 1-thread outputs).

    scripts/bench_selftest_tolerance.py models/tiny-int8 models/tiny-f32 --google \\
        --output scripts/results/selftest_tolerance.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench_common import GOOGLE_LABELS, GOOGLE_MODEL, SHARED, log, stamp, write_json

THREADS = (1, 2, 4)


def _raw(model_bytes: bytes, inputs: np.ndarray, threads: int, reference_kernels: bool = False) -> np.ndarray:
    """Raw outputs; `reference_kernels`: LiteRT's builtin kernels without XNNPACK, a
    stand-in for another CPU's kernel set (other rounding and summation order)."""
    from edge.runtime import make_interpreter
    from trainer.export.selftest_writer import interpreter_outputs

    if reference_kernels:
        from ai_edge_litert import interpreter as litert

        interpreter = litert.Interpreter(model_content=model_bytes, num_threads=threads,
                                         experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    else:
        interpreter, _ = make_interpreter(model_bytes, threads=threads)
    return interpreter_outputs(interpreter, inputs).astype(np.float64)


def _compare(reference: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    diff = np.abs(got - reference)
    rel = diff / np.maximum(np.abs(reference), 1e-12)
    return {"max_abs_diff": float(diff.max()), "max_rel_diff_where_ref_over_1e-3": float(rel[np.abs(reference) > 1e-3].max(initial=0.0)),
            "top1_agree": float(np.mean(got.argmax(1) == reference.argmax(1)))}


def bundle_rows(path: Path) -> dict[str, Any]:
    from edge.bundle import load_model_info
    from edge.selftest import load_selftest

    info = load_model_info(path)
    data = load_selftest(info)
    expected = data.outputs.astype(np.float64)
    per_threads = {str(t): _compare(expected, _raw(info.model_bytes, data.inputs, t)) for t in THREADS}
    per_threads["1, reference kernels (no XNNPACK)"] = _compare(expected, _raw(info.model_bytes, data.inputs, 1, True))
    return {"model": str(path), "output_dtype": str(data.outputs.dtype), "inputs": data.count,
            "units": "codes" if np.issubdtype(data.outputs.dtype, np.integer) else "score",
            "versus": "outputs stored at export (1 thread)", "threads": per_threads}


def google_rows() -> dict[str, Any]:
    from edge.bundle import load_model_info
    from edge.classifier import Classifier
    from edge.images import load_rgb

    info = load_model_info(GOOGLE_MODEL, labels_path=GOOGLE_LABELS)
    clf = Classifier(info, threads=1)
    photos = sorted((SHARED / "images").glob("*.*"))
    inputs = np.stack([clf.preprocess(load_rgb(p))[0] for p in photos])
    reference = _raw(info.model_bytes, inputs, 1)
    per_threads = {str(t): _compare(reference, _raw(info.model_bytes, inputs, t)) for t in THREADS}
    per_threads["1, reference kernels (no XNNPACK)"] = _compare(reference, _raw(info.model_bytes, inputs, 1, True))
    return {"model": str(GOOGLE_MODEL.name), "output_dtype": "uint8", "inputs": len(photos), "units": "codes",
            "versus": "the same model with 1 thread", "threads": per_threads}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="*", type=Path, help="bundle folders with a self-test")
    parser.add_argument("--google", action="store_true", help="also the uint8 ImageNet model in ../shared on ../shared/images")
    parser.add_argument("--output", type=Path, help="also write the JSON here (e.g. scripts/results/...)")
    args = parser.parse_args()
    rows = []
    for bundle in args.bundles:
        log(f"measuring {bundle}")
        rows.append(bundle_rows(bundle))
    if args.google and GOOGLE_MODEL.is_file():
        log("measuring the Google uint8 model")
        rows.append(google_rows())
    result = {**stamp(), "threads": list(THREADS), "models": rows}
    write_json("selftest_tolerance", result)
    if args.output:
        from edge.atomic import write_json as write_atomic_json

        args.output.parent.mkdir(parents=True, exist_ok=True)
        write_atomic_json(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
