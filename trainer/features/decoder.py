"""Images decoded, resized and rendered into their views by a thread pool, in order and
a bounded number ahead of the consumer (the extractor).

A JPEG at least twice the model's input size is decoded at a reduced scale (JPEG draft
mode, `edge.images.load_rgb(min_side=...)`) and then resized as on the device: the
features of large photos come from a decode several times cheaper, at the cost of
slightly different pixels than the device's full decode + area resize."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import ImageError
from edge.images import load_rgb
from edge.preprocess import ResizePolicy
from trainer.dataset import Sample
from trainer.features.views import render_views


@dataclass(frozen=True)
class Job:
    """One image and the views of it that are needed."""

    sample: Sample
    views: tuple[str, ...]


def _decode(job: Job, size: int, policy: ResizePolicy) -> list[np.ndarray] | str:
    try:
        return render_views(load_rgb(job.sample.path, min_side=size), size, policy, job.views, job.sample.digest)
    except ImageError as exc:
        return str(exc).split(": ", 1)[-1]


#: Most bytes of decoded views an `EarlyDecoder` holds before the extractor takes them.
EARLY_BYTES = 96 * 1024 * 1024  # a memory cap; the end of the import is the usual stop


class EarlyDecoder:
    """Decodes the first jobs of a pass on one thread before the extractor exists (while
    TensorFlow imports), until `stop()`; `decoded` takes their images from here instead of
    decoding them again. It stops when told (the import is done: from then on the
    backbone build should have the CPU, and the pass decodes the rest with all threads),
    or at `budget` bytes of images. Jobs nobody asks for (their features were cached)
    are dropped at `close`."""

    def __init__(self, jobs: Sequence[Job], size: int, policy: ResizePolicy, budget: int = EARLY_BYTES) -> None:
        self.size, self.policy = size, policy
        self._done: dict[tuple[str, tuple[str, ...]], Future[Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(list(jobs), budget), name="tledge-early-decode", daemon=True)
        self._thread.start()

    def _run(self, jobs: list[Job], budget: int) -> None:
        held = 0
        for job in jobs:
            held += self.size * self.size * 3 * len(job.views)  # bytes: uint8 RGB per view
            if held > budget or self._stop.is_set():
                return
            done: Future[Any] = Future()
            try:
                done.set_result(_decode(job, self.size, self.policy))  # unreadable files come back as text
            except Exception as exc:  # raised where the pass takes it, as from its own pool
                done.set_exception(exc)
            self._done[(job.sample.digest, job.views)] = done

    def stop(self) -> None:
        """Decode no further job (the one in progress finishes)."""
        self._stop.set()

    def take(self, job: Job, size: int, policy: ResizePolicy) -> Future[Any] | None:
        """The images of exactly this job if they are decoded already, else None."""
        if (size, policy) != (self.size, self.policy):
            return None
        return self._done.pop((job.sample.digest, job.views), None)

    def close(self) -> None:
        """Stop, wait for the job in progress, and drop what nobody took. (Waiting matters
        when a failure ends the process next: a thread still inside OpenCV while the
        interpreter shuts down aborts the process.)"""
        self.stop()
        self._thread.join()
        self._done.clear()

    def __enter__(self) -> EarlyDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decoded(
    jobs: Sequence[Job], size: int, policy: ResizePolicy, threads: int, early: EarlyDecoder | None = None
) -> Iterator[tuple[Job, list[np.ndarray] | str]]:
    """(job, its views' images) in job order; a str instead of images says why the file
    could not be decoded. At most max(8, 8 x threads) images are decoded ahead, besides
    those `early` decoded before the pass began."""
    ahead = max(8, threads * 8)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: list[tuple[Job, Future[Any]]] = []
        for job in jobs:
            started = early.take(job, size, policy) if early is not None else None
            pending.append((job, started or pool.submit(_decode, job, size, policy)))
            if len(pending) >= ahead:
                first, fut = pending.pop(0)
                yield first, fut.result()
        for job, fut in pending:
            yield job, fut.result()
