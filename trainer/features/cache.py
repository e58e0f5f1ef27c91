"""Feature vectors by (file digest, view): on disk under the cache folder, or in memory."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from edge.atomic import write_bytes
from trainer.config import CacheMode, ModelOptions
from trainer.features.views import CACHE_VERSION


def model_key(backbone: str, alpha: float, size: int, resize: str, weights_digest: str) -> str:
    """The cache key of a feature extractor: everything that changes its features."""
    text = f"{backbone}|{alpha}|{size}|{resize}|{weights_digest}|v{CACHE_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def options_key(model: ModelOptions, weights_digest: str) -> str:
    """`model_key` of a run's model options."""
    return model_key(model.backbone.value, model.alpha, model.image_size, model.resize.value, weights_digest)


class FeatureCache:
    """Feature vectors by (file digest, view): on disk under `root`, or in memory.

    A disk that cannot be written (read-only, full) does not stop training: the cache
    switches to memory and says so in `problem`.
    """

    def __init__(self, mode: CacheMode, root: Path, model_key: str) -> None:
        self.mode = CacheMode(mode)
        self.folder = root / "features" / model_key
        self._memory: dict[tuple[str, str], np.ndarray] = {}
        self.problem: str | None = None  # set when the disk cache had to be abandoned

    def _path(self, digest: str, view: str) -> Path:
        return self.folder / digest[:2] / f"{digest}-{view}.npy"

    def get(self, digest: str, view: str) -> np.ndarray | None:
        if self.mode is CacheMode.MEMORY:
            return self._memory.get((digest, view))
        path = self._path(digest, view)
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):  # missing or damaged: recompute
            return None

    def put(self, digest: str, view: str, vector: np.ndarray) -> None:
        if self.mode is CacheMode.MEMORY:
            self._memory[(digest, view)] = vector
            return
        buffer = io.BytesIO()
        np.save(buffer, vector, allow_pickle=False)
        path = self._path(digest, view)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(path, buffer.getvalue(), durable=False)  # recomputable: no fsync
        except OSError as exc:  # read-only or full disk: keep going in memory
            self.mode = CacheMode.MEMORY
            self.problem = f"feature cache {self.folder} is not writable ({exc.strerror or exc}); kept features in memory. Set TLEDGE_CACHE to a writable folder"
            self._memory[(digest, view)] = vector
