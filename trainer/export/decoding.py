"""Calibration and verification images decoded once, in a thread pool, in the background.

The exporter starts decoding every image it will need (calibration, val, test) before
it loads the Keras model, so decoding overlaps model loading, conversion and the
calibrator, which leaves a core idle. Each image is decoded and resized to the model's
input size exactly as the device does (`edge.images.load_rgb` + `edge.preprocess.resize_rgb`);
resizing an already model-size image is the identity, so the device's own preprocessing
of these arrays gives the same tensors as from the original files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from edge.errors import ImageError
from edge.images import load_rgb
from edge.preprocess import ResizePolicy, resize_rgb
from trainer.errors import ExportError


def load_image(path: str, size: tuple[int, int], policy: ResizePolicy, purpose: str) -> np.ndarray:
    """One image decoded and resized as the device does; `purpose` names it in the error."""
    try:
        return resize_rgb(load_rgb(path), size, policy)
    except ImageError as exc:
        raise ExportError(f"{purpose} image unusable: {exc}. Fix or remove it and re-train") from None


class BackgroundDecoder:
    """Decodes named groups of images on a thread pool; `images(name)` waits for a group.

    Use as a context manager: leaving it cancels what has not started yet.
    """

    def __init__(self, size: tuple[int, int], policy: ResizePolicy | str, threads: int | None = None) -> None:
        self.size = size
        self.policy = ResizePolicy(policy)
        self._pool = ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1, thread_name_prefix="tledge-decode")
        self._groups: dict[str, list[Future[np.ndarray]]] = {}

    def submit(self, name: str, paths: Sequence[str], purpose: str) -> None:
        """Queue `paths` (in order) as group `name`; `purpose` names them in errors."""
        self._groups[name] = [self._pool.submit(load_image, str(p), self.size, self.policy, purpose) for p in paths]

    def images(self, name: str) -> np.ndarray:
        """Group `name` as one (N, H, W, 3) uint8 array, in submission order (blocks)."""
        futures = self._groups[name]
        if not futures:
            return np.zeros((0, *self.size, 3), np.uint8)
        return np.stack([f.result() for f in futures])

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "BackgroundDecoder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
