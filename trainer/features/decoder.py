"""Images decoded, resized and rendered into their views by a thread pool, in order and
a bounded number ahead of the consumer (the extractor).

A JPEG at least twice the model's input size is decoded at a reduced scale (JPEG draft
mode, `edge.images.load_rgb(min_side=...)`) and then resized as on the device: the
features of large photos come from a decode several times cheaper, at the cost of
slightly different pixels than the device's full decode + area resize."""

from __future__ import annotations

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
EARLY_BYTES = 96 * 1024 * 1024  # about the images a quiet 2-core machine decodes while TensorFlow imports


class EarlyDecoder:
    """Decodes the first jobs of a pass before the extractor exists (while TensorFlow
    imports and the backbone is built); `decoded` takes their images from here instead
    of decoding them again. Jobs it is never asked for (their features were cached) are
    dropped at `close`. One worker less than `threads`: the import needs a core too."""

    def __init__(self, jobs: Sequence[Job], size: int, policy: ResizePolicy, threads: int, budget: int = EARLY_BYTES) -> None:
        self.size, self.policy = size, policy
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads - 1), thread_name_prefix="tledge-early-decode")
        self._futures: dict[tuple[str, tuple[str, ...]], Future[Any]] = {}
        held = 0
        for job in jobs:
            held += size * size * 3 * len(job.views)  # bytes: uint8 RGB per view
            if held > budget:
                break
            self._futures[(job.sample.digest, job.views)] = self._pool.submit(_decode, job, size, policy)

    def take(self, job: Job, size: int, policy: ResizePolicy) -> Future[Any] | None:
        """The decode already started for exactly this job, if any."""
        if (size, policy) != (self.size, self.policy):
            return None
        return self._futures.pop((job.sample.digest, job.views), None)

    def close(self) -> None:
        """Drop what nobody took; queued decodes are cancelled, running ones finish unseen."""
        self._futures.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

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
