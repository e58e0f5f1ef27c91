#!/usr/bin/env python
"""Inference latency per quantization mode, thread count and interpreter API (issue 7, item 3).

    scripts/bench_inference.py                      # the exporter's bundles, else dev models
    scripts/bench_inference.py --model models/ --threads 1,2 --rounds 7
    scripts/bench_inference.py --quick              # a few seconds per configuration

What is timed is the model call alone (write input, run, read output) on a prepared
input, like `tledge bench`. APIs compared, side by side on the same models:

- ``interpreter``: ai-edge-litert's Interpreter as tledge uses it (`edge.classifier`),
  XNNPACK applied by default;
- ``interpreter-no-xnnpack``: the same without the default delegate (TFLite's builtin
  kernels), to show what XNNPACK contributes per mode;
- ``compiled``: ai-edge-litert's CompiledModel API (`edge.runtime.CompiledModelRunner`);
- ``tflite_runtime``: the legacy tflite-runtime wheel, in its own virtualenv (it needs
  numpy < 2), driven by a worker child process each round; also without its default
  XNNPACK delegate (``tflite_runtime-no-xnnpack``, 1 thread).

Rounds interleave every configuration (each runs a block of invokes per round), so a
burst of load from other processes hits them all alike; p50/p90 are over all samples.
Multiply-adds are counted from each model file (conv, depthwise, fully connected) and
turned into GMAC/s at the p50, next to the fp32 peak of the cores used. Writes
scripts/out/bench_inference.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

TFLRT_VENV = bc.OUT / "tflite-runtime-venv"
APIS = ("interpreter", "interpreter-no-xnnpack", "compiled", "tflite_runtime")


def _input_for(details: dict[str, Any]) -> Any:
    import numpy as np

    rng = np.random.default_rng(0)
    shape = [max(1, int(d)) for d in details["shape"]]
    dtype = np.dtype(details["dtype"])
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max + 1, shape, dtype=dtype)
    return rng.uniform(0, 255, shape).astype(dtype)


def _interpreter_call(interpreter: Any) -> Callable[[], Any]:
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    tensor = _input_for(inp)

    def call() -> Any:
        interpreter.set_tensor(inp["index"], tensor)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    return call


def make_call(api: str, model: bc.ModelRef, threads: int) -> Callable[[], Any]:
    """A zero-argument callable that runs `model` once through `api` (in this process)."""
    from edge.bundle import load_model_info

    info = load_model_info(model.path, labels_path=model.labels)
    if api == "interpreter":
        from edge.classifier import Classifier

        return _interpreter_call(Classifier(info, threads=threads).interpreter)
    if api == "interpreter-no-xnnpack":
        from ai_edge_litert import interpreter as litert

        interpreter = litert.Interpreter(
            model_content=info.model_bytes, num_threads=threads,
            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interpreter.allocate_tensors()
        return _interpreter_call(interpreter)
    if api == "compiled":
        from edge.runtime import CompiledModelRunner

        runner = CompiledModelRunner(info.model_bytes, threads)
        tensor = _input_for(runner._model.get_input_tensor_details(runner._model.get_signature_by_index(0)["key"]).popitem()[1])
        return lambda: runner.run(tensor)
    raise ValueError(api)


def time_block(call: Callable[[], Any], runs: int, warmup: int) -> list[list[float]]:
    """`runs` [wall ms, process CPU ms] pairs after `warmup` untimed calls. CPU time
    (all threads of this process) does not grow when other processes take the cores,
    so with 1 thread it is the latency this machine would give unloaded."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        cpu, start = time.process_time(), time.perf_counter()
        call()
        times.append([(time.perf_counter() - start) * 1000.0, (time.process_time() - cpu) * 1000.0])
    return times


# -- tflite-runtime, in its own virtualenv ------------------------------------------
def tflite_runtime_python(explicit: str | None) -> tuple[str | None, str]:
    """(python of a venv with tflite-runtime, note). Creates scripts/out/tflite-runtime-venv
    on first use; (None, why) when the wheel does not install here."""
    if explicit:
        return explicit, f"given: {explicit}"
    python = TFLRT_VENV / "bin" / "python"
    if not python.is_file():
        bc.log("creating scripts/out/tflite-runtime-venv with tflite-runtime and numpy<2 (once)")
        base = getattr(sys, "_base_executable", None) or "python3"
        steps = [[base, "-m", "venv", str(TFLRT_VENV)], [str(python), "-m", "pip", "install", "-q", "tflite-runtime", "numpy<2"]]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                return None, f"tflite-runtime does not install here: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    probe = subprocess.run([str(python), "-c", "import tflite_runtime, numpy; print(tflite_runtime.__version__, numpy.__version__)"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, f"tflite-runtime does not import: {probe.stderr.strip().splitlines()[-1:]}"
    version, numpy_version = probe.stdout.split()
    return str(python), f"tflite-runtime {version} (numpy {numpy_version}) in {TFLRT_VENV.relative_to(bc.ROOT)}"


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Child-process body: time every (model, threads) through tflite_runtime."""
    from edge.runtime import make_interpreter

    results: dict[str, Any] = {}
    for path in spec["models"]:
        data = Path(path).read_bytes()
        for threads in spec["threads"]:
            key = f"{path}|tflite_runtime|{threads}"
            try:
                interpreter, _ = make_interpreter(data, threads=threads, backend="tflite_runtime")
                results[key] = time_block(_interpreter_call(interpreter), spec["runs"], spec["warmup"])
            except Exception as exc:  # an op version this old runtime lacks, etc.: report, go on
                results[key] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
        # Without its default XNNPACK delegate, 1 thread: shows which modes XNNPACK takes here.
        key = f"{path}|tflite_runtime-no-xnnpack|1"
        try:
            from tflite_runtime import interpreter as tflrt  # type: ignore[import-not-found]

            plain = tflrt.Interpreter(model_content=data, num_threads=1, experimental_op_resolver_type=tflrt.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            plain.allocate_tensors()
            results[key] = time_block(_interpreter_call(plain), spec["runs"], spec["warmup"])
        except Exception as exc:
            results[key] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
    return results


def run_worker(python: str, models: list[bc.ModelRef], threads: list[int], runs: int, warmup: int) -> dict[str, Any]:
    spec = {"models": [str(m.tflite) for m in models], "threads": threads, "runs": runs, "warmup": warmup}
    done = subprocess.run(
        [python, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        capture_output=True, text=True, cwd=bc.ROOT, env={**os.environ, "PYTHONPATH": str(bc.ROOT)},
    )
    if done.returncode != 0:
        return {f"{m.tflite}|tflite_runtime|{t}": f"worker failed: {done.stderr.strip()[-300:]}" for m in models for t in threads}
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the benchmark ------------------------------------------------------------------
def _summary(model: bc.ModelRef, api: str, threads: int, pairs: list[list[float]], macs: int) -> dict[str, Any]:
    times = [wall for wall, _ in pairs]
    p50 = bc.percentile(times, 50)
    gmacs = macs / (p50 / 1000.0) / 1e9
    peak = bc.fp32_peak_gmacs(threads)
    return {
        "model": model.name, "mode": model.mode, "api": api, "threads": threads, "samples": len(times),
        "p50_ms": round(p50, 3), "p90_ms": round(bc.percentile(times, 90), 3),
        "cpu_p50_ms": round(bc.percentile([c for _, c in pairs], 50), 3),  # CPU time of all threads per invoke
        "gmac_per_s": round(gmacs, 2), "fp32_peak_gmac_per_s": round(peak, 1),
        "pct_of_fp32_peak": round(100.0 * gmacs / peak, 1) if peak else None,
    }


def benchmark(models: list[bc.ModelRef], thread_counts: list[int], apis: list[str], rounds: int, runs: int, warmup: int, tflrt_python: str | None) -> list[dict[str, Any]]:
    samples: dict[tuple[str, str, int], list[list[float]]] = {}
    errors: dict[tuple[str, str, int], str] = {}
    calls: dict[tuple[str, str, int], Callable[[], Any]] = {}
    local = [a for a in apis if a != "tflite_runtime"]
    for model in models:
        for api in local:
            for threads in thread_counts:
                key = (model.name, api, threads)
                try:
                    calls[key] = make_call(api, model, threads)
                    samples[key] = []
                except Exception as exc:  # a model one API cannot load: report it, measure the rest
                    errors[key] = f"{type(exc).__name__}: {exc}"
    for r in range(rounds):
        bc.log(f"round {r + 1}/{rounds}")
        for key, call in calls.items():
            samples[key].extend(time_block(call, runs, warmup if r == 0 else 1))
        if "tflite_runtime" in apis and tflrt_python:
            for path_api_threads, value in run_worker(tflrt_python, models, thread_counts, runs, warmup).items():
                path, api, threads = path_api_threads.rsplit("|", 2)
                model = next(m for m in models if str(m.tflite) == path)
                key = (model.name, api, int(threads))
                if isinstance(value, str):
                    errors[key] = value
                else:
                    samples.setdefault(key, []).extend(value)
    macs = {m.name: sum(bc.count_macs(m.tflite.read_bytes()).values()) for m in models}
    by_name = {m.name: m for m in models}
    rows = [_summary(by_name[k[0]], k[1], k[2], v, macs[k[0]]) for k, v in samples.items() if v and k not in errors]
    rows += [{"model": k[0], "mode": by_name[k[0]].mode, "api": k[1], "threads": k[2], "error": e} for k, e in errors.items()]
    return rows


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Goal: int8 no slower than float32 (the tledge Interpreter, p50, per thread count)."""
    def p50(mode: str, api: str, threads: int) -> float | None:
        found = [r["p50_ms"] for r in rows if r.get("mode") == mode and r["api"] == api and r["threads"] == threads and "p50_ms" in r]
        return found[0] if found else None

    threads = sorted({r["threads"] for r in rows})
    checks, details = [], []
    for t in threads:
        i8, f32 = p50("int8", "interpreter", t), p50("float32", "interpreter", t)
        if i8 is None or f32 is None:
            continue
        checks.append(i8 <= f32 * 1.02)  # a 2 % tolerance for round-to-round noise
        details.append(f"{t} thread(s): int8 {i8:.2f} ms vs float32 {f32:.2f} ms (x{f32 / i8:.2f} speed-up)")
        n8, nf = p50("int8", "interpreter-no-xnnpack", t), p50("float32", "interpreter-no-xnnpack", t)
        if n8 is not None and nf is not None:
            details.append(f"without XNNPACK, {t} thread(s): int8 {n8:.2f} ms vs float32 {nf:.2f} ms")
    return [{
        "goal": "int8 no slower than float32 (LiteRT Interpreter, p50)",
        "met": all(checks) if checks else None,
        "detail": "; ".join(details) or "no int8 + float32 pair measured",
    }]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], help="A bundle, .tflite, or folder of them (repeatable). Default: the exporter's bundles, else the dev models.")
    parser.add_argument("--threads", default="1,2", help="Thread counts, comma-separated.")
    parser.add_argument("--api", action="append", choices=APIS, help="APIs to measure (repeatable; default all).")
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds.")
    parser.add_argument("--runs", type=int, default=20, help="Timed invokes per configuration per round.")
    parser.add_argument("--warmup", type=int, default=5, help="Untimed invokes before the first round.")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 5 invokes: a smoke run, not figures to quote.")
    parser.add_argument("--tflite-runtime-python", help="Python of a venv with tflite-runtime (default: make scripts/out/tflite-runtime-venv).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.runs, args.warmup = 2, 5, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    models = bc.expand_models(args.model) if args.model else bc.default_models(reference=True)
    thread_counts = [int(t) for t in args.threads.split(",")]
    apis = args.api or list(APIS)
    python, note = (None, "not requested")
    if "tflite_runtime" in apis:
        python, note = tflite_runtime_python(args.tflite_runtime_python)
        bc.log(note)
    bc.log(f"{len(models)} model(s): {', '.join(m.name for m in models)}")
    rows = benchmark(models, thread_counts, apis, args.rounds, args.runs, args.warmup, python)
    model_facts = []
    for m in models:
        macs = bc.count_macs(m.tflite.read_bytes())
        model_facts.append({"name": m.name, "mode": m.mode, "path": str(m.path), "size_bytes": m.tflite.stat().st_size, "macs": macs, "total_macs": sum(macs.values())})
    result = {
        **bc.stamp(),
        "settings": {"rounds": args.rounds, "runs_per_round": args.runs, "warmup": args.warmup, "threads": thread_counts, "apis": apis},
        "tflite_runtime": {"available": python is not None, "note": note},
        "models": model_facts,
        "results": rows,
        "goals": goals(rows),
    }
    bc.write_json("bench_inference", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
