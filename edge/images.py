"""Decode image files to RGB uint8 arrays, the same way for training and on the device.

Pillow decodes (JPEG, PNG, BMP, GIF first frame, WebP), applies the EXIF orientation of
phone photos, and converts grayscale, palette, RGBA, 16-bit and CMYK images to RGB.
Image headers are checked before any pixel is decoded, so a decompression bomb is
refused instead of allocating gigabytes. Only the formats above are tried, whatever the
file is named: Pillow's other plugins (EPS runs Ghostscript, PSD, ICNS, ...) are never
reached by a file that merely claims to be a photo.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edge.errors import ImageError

#: File name suffixes treated as images (lower case).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})

#: Pillow decoders tried, whatever the suffix (a PNG named .jpg is common and fine).
#: "JPEG" also opens multi-picture (MPO) camera files.
PIL_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP")

#: Largest image decoded, in pixels (width * height). 40 megapixels covers every phone
#: camera; a 20000x20000 "bomb" (400 MP) is refused before decoding.
MAX_PIXELS = 40_000_000

# What a damaged file can make Pillow's decoders raise (struct.error and IndexError
# come from broken EXIF / chunk tables).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, KeyError, struct.error)


def is_image_name(path: str | os.PathLike[str]) -> bool:
    """True for a visible file whose suffix is one of `IMAGE_SUFFIXES`."""
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def load_rgb(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS, min_side: int | None = None) -> np.ndarray:
    """Decode `path` to an RGB uint8 array of shape (height, width, 3).

    `min_side`: a JPEG at least twice that size on its shorter side is decoded at a
    reduced scale (1/2, 1/4 or 1/8, libjpeg's scaled decoding through Pillow's draft
    mode) that keeps both sides >= `min_side` pixels: several times faster for photos
    much larger than the model's input. None (the default, and what the device does):
    full resolution. Raises `ImageError` with the reason (unreadable, empty, truncated,
    not an image, too large).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes); delete it or copy it again")
    try:
        with open(path, "rb") as stream:
            return _decode(stream, str(path), max_pixels, min_side)
    except OSError as exc:  # open() itself: permissions, a directory named .jpg, ...
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def decode_rgb(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Like `load_rgb` but from bytes in memory (used by the fuzz script and uploads)."""
    if not data:
        raise ImageError(f"{name}: empty data (0 bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(stream: IO[bytes], name: str, max_pixels: int, min_side: int | None = None) -> np.ndarray:
    """Open, check the header's size, decode the first frame, orient and convert."""
    try:
        with warnings.catch_warnings():
            # Pillow warns about harmless EXIF damage on every such photo; the bomb
            # warning (between Pillow's own limit and twice it) is made an error.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream, formats=PIL_FORMATS) as img:
                _check_size(img.size, name, max_pixels)
                if min_side:
                    _reduce(img, min_side)
                img.seek(0)  # first frame of GIF / animated WebP
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard fired before ours could read the size (> ~89 MP).
        raise ImageError(f"{name}: larger than the {max_pixels:,}-pixel limit (possible decompression bomb); downscale it first") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not a readable image (not {', '.join(PIL_FORMATS)}, or its header is damaged); "
            "remove it or convert it to JPEG/PNG"
        ) from None
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode it; downscale it first") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc}); remove it or copy it again") from None


def _reduce(img: Image.Image, min_side: int) -> None:
    """Ask a JPEG decoder for the smallest scale whose shorter side is still >= min_side."""
    width, height = img.size
    factor = min_side / min(width, height)
    if img.format in ("JPEG", "MPO") and factor <= 0.5:
        # draft() picks the largest reduction that still covers the requested size
        img.draft(img.mode, (max(1, math.ceil(width * factor)), max(1, math.ceil(height * factor))))


def _check_size(size: tuple[int, int], name: str, max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"{name}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} is larger than the {max_pixels:,}-pixel limit "
            "(possible decompression bomb); downscale it first"
        )


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to RGB uint8; transparency is composited onto white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping to white.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        gray = np.clip(arr * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    rgb = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
