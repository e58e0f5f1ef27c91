"""The views of a training image: the clean one, and augmented ones seeded by file and view."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import cv2
import numpy as np

from edge.preprocess import ResizePolicy, resize_rgb

#: Bumped when decoding, resizing or augmentation change, so old cached features are not reused.
CACHE_VERSION = "1"
CLEAN_VIEW = "clean"


def view_names(augment_views: int, seed: int) -> tuple[str, ...]:
    """The views of a training image: the clean one plus `augment_views` augmented ones."""
    return (CLEAN_VIEW,) + tuple(f"aug{CACHE_VERSION}-s{seed}-{i}" for i in range(1, augment_views + 1))


def augment(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random flip, rotation (±15°), zoom (0.9-1.2x), brightness and contrast change."""
    h, w = rgb.shape[:2]
    if rng.random() < 0.5:
        rgb = rgb[:, ::-1]
    angle = rng.uniform(-15.0, 15.0)  # degrees
    zoom = rng.uniform(0.9, 1.2)
    matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, zoom)
    out = cv2.warpAffine(np.ascontiguousarray(rgb), matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    contrast = rng.uniform(0.8, 1.2)
    brightness = rng.uniform(-0.1, 0.1) * 255.0  # pixels
    mean = out.mean(dtype=np.float32)
    adjusted = (out.astype(np.float32) - mean) * contrast + mean + brightness
    return np.clip(adjusted, 0, 255).astype(np.uint8)


def render_views(rgb: np.ndarray, size: int, policy: ResizePolicy, views: Sequence[str], digest: str) -> list[np.ndarray]:
    """The model-size image of each named view; augmentation is seeded by file and view."""
    base = resize_rgb(rgb, (size, size), policy)
    out = []
    for view in views:
        if view == CLEAN_VIEW:
            out.append(base)
        else:
            seed = int.from_bytes(hashlib.sha256(f"{digest}:{view}".encode()).digest()[:8], "little")
            out.append(augment(base, np.random.default_rng(seed)))
    return out
