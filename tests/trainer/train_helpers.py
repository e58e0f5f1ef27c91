"""Helpers for the trainer tests: tiny image files of every kind, fast tiny options."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from trainer.config import CacheMode, DataOptions, FeatureEngine, HyperParams, ModelOptions, RuntimeOptions, TrainOptions, WeightsKind, WeightsSpec


def write_image(path: Path, rgb: np.ndarray, fmt: str | None = None, mode: str | None = None, **save: Any) -> Path:
    """Save `rgb` (H, W, 3 uint8) with Pillow, optionally converted to `mode` first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(rgb)
    if mode == "I;16":
        gray = np.asarray(img.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
        img = Image.fromarray(gray)  # uint16 -> mode I;16
    elif mode:
        img = img.convert(mode)
    img.save(path, format=fmt, **save)
    return path


def solid(colour: tuple[int, int, int], size: int = 32, seed: int = 0) -> np.ndarray:
    """A noisy solid-colour image: distinct files for distinct seeds."""
    rng = np.random.default_rng(seed)
    base = np.array(colour, dtype=np.float64)
    return np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)


def colour_dataset(root: Path, per_class: dict[str, int], size: int = 32, seed: int = 0) -> Path:
    """Flat folder-per-class dataset of solid-colour PNGs; class i gets colour i."""
    colours = [(230, 40, 40), (40, 230, 40), (40, 40, 230), (230, 230, 40), (40, 230, 230)]
    for i, (name, count) in enumerate(sorted(per_class.items())):
        for k in range(count):
            write_image(root / name / f"{name}_{k}.png", solid(colours[i % len(colours)], size, seed=seed + 1000 * i + k))
    return root


def tiny_options(
    data_dir: Path, out_dir: Path, cache_dir: Path | None = None, split: tuple[float, float] = (0.1, 0.1), **hyper: Any
) -> TrainOptions:
    """48 px MobileNetV2 alpha 0.35, random weights, Keras features in memory, 1 epoch."""
    runtime = RuntimeOptions(engine=FeatureEngine.KERAS, cache=CacheMode.MEMORY, quiet=True)
    if cache_dir is not None:
        runtime = replace(runtime, cache=CacheMode.DISK, cache_dir=cache_dir)
    return TrainOptions(
        data=DataOptions(data_dir, val_split=split[0], test_split=split[1]),
        model=ModelOptions(alpha=0.35, image_size=48, weights=WeightsSpec(WeightsKind.NONE)),
        hyper=replace(HyperParams(epochs=1, augment_views=1), **hyper),
        runtime=runtime,
        out_dir=out_dir,
        seed=0,
    )
