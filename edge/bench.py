"""`tledge bench`: model latency percentiles and throughput per thread count.

What is timed is the model call alone (write the input, run, read the output) on a
prepared input tensor, so the numbers compare interpreters, thread counts and APIs;
`tledge run` reports the end-to-end per-frame latency (resize + model + top-k).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from edge.bundle import ModelInfo
from edge.choices import BenchApi
from edge.classifier import Classifier
from edge.errors import TledgeError
from edge.runtime import CompiledModelRunner
from edge.stats import percentile


@dataclass(frozen=True)
class BenchResult:
    """Latency of `runs` sequential inferences with `threads` threads."""

    api: str
    threads: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # inferences per second, sequential

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def parse_thread_counts(text: str) -> list[int]:
    """"1,2,4" -> [1, 2, 4]. Raises `TledgeError` naming the bad part."""
    counts = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= 64:
            raise TledgeError(f"--threads {text!r}: {part!r} is not a thread count; give numbers 1..64 separated by commas, e.g. 1,2,4")
        counts.append(int(part))
    return counts


def time_calls(call: Callable[[], Any], runs: int, warmup: int) -> np.ndarray:
    """Latencies of `runs` calls after `warmup` untimed ones, in ms."""
    for _ in range(warmup):
        call()
    times = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        start = time.perf_counter()
        call()
        times[i] = (time.perf_counter() - start) * 1000.0
    return times


def _model_call(info: ModelInfo, threads: int, api: BenchApi, delegate: str | None) -> Callable[[], Any]:
    clf = Classifier(info, threads=threads, delegate=delegate)
    rng = np.random.default_rng(0)
    tensor = clf.preprocess(rng.integers(0, 256, (*clf.input_size, 3), dtype=np.uint8))
    if api is BenchApi.INTERPRETER:
        interpreter, inp, out = clf.interpreter, clf._in["index"], clf._out["index"]

        def call() -> Any:
            interpreter.set_tensor(inp, tensor)
            interpreter.invoke()
            return interpreter.get_tensor(out)

        return call
    if delegate:
        raise TledgeError("--delegate works with --api interpreter only")
    runner = CompiledModelRunner(info.model_bytes, threads)
    return lambda: runner.run(tensor)


def bench_model(info: ModelInfo, thread_counts: list[int], runs: int = 50, warmup: int = 5, api: BenchApi = BenchApi.INTERPRETER, delegate: str | None = None) -> list[BenchResult]:
    """Measure `info`'s model once per thread count."""
    results = []
    for threads in thread_counts:
        times = time_calls(_model_call(info, threads, BenchApi(api), delegate), runs, warmup)
        results.append(
            BenchResult(
                api=BenchApi(api).value, threads=threads, runs=runs,
                p50_ms=percentile(times, 50), p90_ms=percentile(times, 90), p99_ms=percentile(times, 99), mean_ms=float(times.mean()),
                throughput=float(runs / (times.sum() / 1000.0)),
            )
        )
    return results
