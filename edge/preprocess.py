"""Resize an RGB frame to the model's input exactly as training did.

The policy is recorded in every bundle (`input.resize`), so the device never guesses:

- ``center_crop`` (default): crop the largest centred region with the model's aspect
  ratio, then resize. Keeps proportions for 4:3 / 16:9 cameras and portrait photos.
- ``stretch``: resize the whole frame, ignoring aspect ratio.

Interpolation is OpenCV's INTER_AREA when shrinking (anti-aliased) and INTER_LINEAR when
enlarging. Pixel scaling/normalisation is *not* done here: it lives inside the model
graph, so the model takes raw RGB pixels 0..255.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.choices import ResizePolicy

__all__ = ["ResizePolicy", "center_crop_box", "resize_rgb"]


def center_crop_box(height: int, width: int, out_h: int, out_w: int) -> tuple[int, int, int, int]:
    """(top, left, crop_h, crop_w) of the largest centred box with aspect out_w/out_h."""
    target = out_w / out_h
    if width / height > target:  # too wide: trim the sides
        crop_h, crop_w = height, max(1, round(height * target))
    else:  # too tall: trim top and bottom
        crop_h, crop_w = max(1, round(width / target)), width
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def resize_rgb(frame_rgb: np.ndarray, size: tuple[int, int], policy: ResizePolicy | str) -> np.ndarray:
    """Return `frame_rgb` (H, W, 3 uint8) resized to `size` = (height, width) under `policy`."""
    policy = ResizePolicy(policy)
    out_h, out_w = size
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB frame of shape (H, W, 3), got {frame_rgb.shape}")
    if policy is ResizePolicy.CENTER_CROP:
        top, left, crop_h, crop_w = center_crop_box(frame_rgb.shape[0], frame_rgb.shape[1], out_h, out_w)
        frame_rgb = frame_rgb[top : top + crop_h, left : left + crop_w]
    in_h, in_w = frame_rgb.shape[:2]
    if (in_h, in_w) == (out_h, out_w):
        return np.ascontiguousarray(frame_rgb)
    shrinking = in_h >= out_h and in_w >= out_w
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(frame_rgb, (out_w, out_h), interpolation=interpolation)
