"""The feature pass in a process of its own, beside TensorFlow's import in the run's process.

With a prepared backbone (trainer.features.prepared) the features need no TensorFlow.
Computed on a thread of the run's process they gain little on a small machine: importing
TensorFlow and building the Keras model hold Python's GIL for seconds, and the pass's
decoding and batching wait for it. In a process of its own the pass has its own GIL, so
both go at once. The worker writes the features into the disk feature cache, where the
run reads them back; on stdout it reports one line per image done and, last, one JSON
line with the files it could not decode and the pass's statistics.

Run as ``python -m trainer.features.worker SPEC`` (SPEC: a pickle of `WorkerSpec`); it
imports nothing of TensorFlow.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge.preprocess import ResizePolicy
from trainer.config import CacheMode, FeatureEngine
from trainer.features.cache import FeatureCache
from trainer.features.decoder import Job
from trainer.features.extract import PassStats, extract

RESULT_PREFIX = "result "  # the last stdout line: RESULT_PREFIX + JSON


@dataclass(frozen=True)
class WorkerSpec:
    """What the worker computes: `jobs` on the converted backbone at `tflite`, cached
    under `cache_root` / `key`."""

    jobs: tuple[Job, ...]
    size: int
    policy: ResizePolicy
    cache_root: Path
    key: str
    tflite: Path
    threads: int
    batch: int
    max_abs_diff: float | None  # the cached engine choice's TFLite-vs-Keras figure, for the stats
    measured: dict


class WorkerFailed(Exception):
    """The worker did not finish (the message says why); the run computes in-process."""


class FeatureWorker:
    """A running worker (parent side): `result()` waits for it and reads the features back."""

    def __init__(self, spec: WorkerSpec, on_image: Callable[[int], None]) -> None:
        self.spec = spec
        self._folder = tempfile.TemporaryDirectory(prefix="tledge-features-")
        spec_path = Path(self._folder.name) / "spec.pickle"
        spec_path.write_bytes(pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL))
        self._stderr = open(Path(self._folder.name) / "stderr", "w+b")  # a file: never blocks the worker
        self._process = subprocess.Popen(
            [sys.executable, "-m", "trainer.features.worker", str(spec_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
        )
        self._result: str | None = None
        self._reader = threading.Thread(target=self._read, args=(on_image,), name="tledge-feature-worker", daemon=True)
        self._reader.start()

    def _read(self, on_image: Callable[[int], None]) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if line.startswith(RESULT_PREFIX):
                self._result = line[len(RESULT_PREFIX):]
            elif line.strip().isdigit():
                on_image(int(line))

    def cancel(self) -> None:
        """Stop the worker (the run failed or goes another way) and remove its files."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._reader.join()
        self._close()

    def _close(self) -> None:
        self._stderr.close()
        self._folder.cleanup()

    def result(self) -> tuple[dict[tuple[str, str], np.ndarray], dict[Path, str], PassStats]:
        """(features, undecodable file -> reason, stats) as `extract` returns them; raises
        `WorkerFailed` when the worker did not finish."""
        try:
            code = self._process.wait()
        except BaseException:  # interrupted while waiting: do not leave the worker running
            self.cancel()
            raise
        self._reader.join()
        try:
            if code != 0 or self._result is None:
                self._stderr.seek(0)
                lines = self._stderr.read().decode(errors="replace").strip().splitlines() or [f"exit status {code}"]
                raise WorkerFailed(lines[-1])
            report = json.loads(self._result)
        finally:
            self._close()
        stats = PassStats(**report["stats"])
        failures = {Path(path): reason for path, reason in report["failures"].items()}
        spec = self.spec
        cache = FeatureCache(CacheMode.DISK, spec.cache_root, spec.key)
        features: dict[tuple[str, str], np.ndarray] = {}
        for job in spec.jobs:
            if job.sample.path in failures:
                continue
            for view in job.views:
                vector = cache.get(job.sample.digest, view)
                if vector is None:  # written by the worker a moment ago; gone means the cache is not usable
                    raise WorkerFailed(f"the feature cache lost {job.sample.path}'s features")
                features[(job.sample.digest, view)] = vector
        return features, failures, stats


def run(spec: WorkerSpec, out: Callable[[str], None]) -> None:
    """The worker's pass: `extract` on the cached TFLite backbone into the disk cache."""
    from trainer.features.engine_choice import EngineChoice
    from trainer.features.tflite_engine import TFLiteExtractor

    extractor = TFLiteExtractor(spec.tflite.read_bytes(), spec.size, spec.batch, spec.threads)
    engine = EngineChoice(extractor, FeatureEngine.TFLITE, spec.max_abs_diff, 0.0, measured=spec.measured)
    cache = FeatureCache(CacheMode.DISK, spec.cache_root, spec.key)
    _, failures, stats = extract(spec.jobs, cache, lambda probe: engine, spec.size, spec.policy, spec.threads, on_image=lambda n: out(f"{n}"))
    if cache.problem:  # the cache could not be written: the parent could not read the features back
        raise OSError(cache.problem)
    report = {"failures": {str(path): reason for path, reason in failures.items()}, "stats": asdict(stats)}
    out(RESULT_PREFIX + json.dumps(report))


def main(argv: Sequence[str]) -> int:
    spec: WorkerSpec = pickle.loads(Path(argv[0]).read_bytes())

    def out(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    run(spec, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
