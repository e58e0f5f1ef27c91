"""Images decoded, resized and rendered into their views by a thread pool, in order and
a bounded number ahead of the consumer (the extractor)."""

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
        return render_views(load_rgb(job.sample.path), size, policy, job.views, job.sample.digest)
    except ImageError as exc:
        return str(exc).split(": ", 1)[-1]


def decoded(jobs: Sequence[Job], size: int, policy: ResizePolicy, threads: int) -> Iterator[tuple[Job, list[np.ndarray] | str]]:
    """(job, its views' images) in job order; a str instead of images says why the file
    could not be decoded. At most max(8, 8 x threads) images are decoded ahead."""
    ahead = max(8, threads * 8)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: list[tuple[Job, Future[Any]]] = []
        for job in jobs:
            pending.append((job, pool.submit(_decode, job, size, policy)))
            if len(pending) >= ahead:
                first, fut = pending.pop(0)
                yield first, fut.result()
        for job, fut in pending:
            yield job, fut.result()
