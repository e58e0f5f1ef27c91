"""edge.images.load_rgb(min_side=...): large JPEGs decoded at a reduced scale, never below min_side."""

from __future__ import annotations

import numpy as np
from PIL import Image

from edge.images import load_rgb


def _save(path, size, fmt="JPEG"):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
    Image.fromarray(small).resize(size, Image.BILINEAR).save(path, format=fmt)
    return path


def test_a_large_jpeg_is_decoded_reduced_but_not_below_min_side(tmp_path):
    path = _save(tmp_path / "big.jpg", (1000, 800))  # width, height
    full = load_rgb(path)
    reduced = load_rgb(path, min_side=96)
    assert full.shape == (800, 1000, 3)
    assert reduced.shape == (100, 125, 3)  # 1/8 keeps the shorter side (100) >= 96


def test_reduction_keeps_the_shorter_side_at_least_min_side(tmp_path):
    path = _save(tmp_path / "big.jpg", (1000, 800))
    for min_side in (96, 150, 224, 399, 400, 401):
        out = load_rgb(path, min_side=min_side)
        assert min(out.shape[:2]) >= min_side
        assert out.shape[0] * 1000 == out.shape[1] * 800  # aspect ratio kept (exact scales)


def test_small_jpegs_and_other_formats_are_decoded_in_full(tmp_path):
    small = _save(tmp_path / "small.jpg", (400, 320))
    assert load_rgb(small, min_side=224).shape == (320, 400, 3)  # 1/2 would give 160 < 224
    png = _save(tmp_path / "big.png", (1000, 800), fmt="PNG")
    np.testing.assert_array_equal(load_rgb(png, min_side=96), load_rgb(png))
