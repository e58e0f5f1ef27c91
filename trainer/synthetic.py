"""Procedural images and video: the built-in data of the demo and the tests.

No third-party images ship with tledge. These classes are drawn with OpenCV: shapes of
random colour, size, position and rotation on a noisy, textured background, so a model
has to learn the shape, not a colour. Same seed, same pixels.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "stripes")


def draw(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB uint8 image of class `kind`, `size` x `size` pixels."""
    base = rng.integers(40, 215, size=3)
    img = np.clip(base + rng.normal(0, 18, (size, size, 3)), 0, 255).astype(np.uint8)
    colour = tuple(int(c) for c in (255 - base + rng.integers(-30, 30, 3)) % 256)
    cx, cy = (int(v) for v in rng.integers(int(size * 0.35), int(size * 0.65), 2))
    radius = int(size * rng.uniform(0.2, 0.33))
    angle = rng.uniform(0, 2 * math.pi)
    if kind == "circle":
        cv2.circle(img, (cx, cy), radius, colour, -1, cv2.LINE_AA)
    elif kind in ("square", "triangle"):
        sides = 4 if kind == "square" else 3
        pts = [
            (cx + radius * math.cos(angle + 2 * math.pi * i / sides), cy + radius * math.sin(angle + 2 * math.pi * i / sides))
            for i in range(sides)
        ]
        cv2.fillPoly(img, [np.array(pts, dtype=np.int32)], colour, cv2.LINE_AA)
    elif kind == "stripes":
        period = max(4, int(size * rng.uniform(0.08, 0.16)))
        yy, xx = np.mgrid[0:size, 0:size]
        proj = xx * math.cos(angle) + yy * math.sin(angle)
        mask = (proj // (period / 2)).astype(int) % 2 == 0
        img[mask] = colour
    else:
        raise ValueError(f"unknown synthetic class {kind!r}; choose from {CLASSES}")
    return img


def make_dataset(
    root: str | Path,
    per_class: int = 40,
    size: int = 64,
    classes: tuple[str, ...] = CLASSES,
    seed: int = 0,
    splits: dict[str, int] | None = None,
) -> Path:
    """Write a folder-per-class dataset of PNG files under `root` and return it.

    With `splits` (e.g. {"train": 30, "val": 5, "test": 5} images per class) the
    `train/ val/ test/` layout is written instead of a flat one.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    layout = splits or {"": per_class}
    for split, count in layout.items():
        for name in classes:
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rgb = draw(name, size, rng)
                cv2.imwrite(str(folder / f"{name}_{i:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return root


def make_video(
    path: str | Path,
    frames_per_class: int = 15,
    size: tuple[int, int] = (160, 120),
    classes: tuple[str, ...] = CLASSES,
    fps: float = 15.0,
    seed: int = 1,
) -> tuple[Path, list[str]]:
    """Write an MJPG .avi whose segments show each class in turn.

    Returns the path and the ground-truth class of every frame. `size` is
    (width, height) in pixels; each frame is a square drawing centred on a border.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    rng = np.random.default_rng(seed)
    truth: list[str] = []
    side = min(width, height)
    try:
        for name in classes:
            for _ in range(frames_per_class):
                frame = np.full((height, width, 3), 127, dtype=np.uint8)
                top, left = (height - side) // 2, (width - side) // 2
                frame[top : top + side, left : left + side] = draw(name, side, rng)
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                truth.append(name)
    finally:
        writer.release()
    return path, truth
