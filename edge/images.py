"""Decode image files to RGB uint8 arrays, the same way for training and on the device.

Pillow decodes (JPEG, PNG, BMP, GIF first frame, WebP), applies the EXIF orientation of
phone photos, and converts grayscale, palette, RGBA, 16-bit and CMYK images to RGB.
Image headers are checked before any pixel is decoded, so a decompression bomb is
refused instead of allocating gigabytes.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edge.errors import ImageError

#: File name suffixes treated as images (lower case).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})

#: Largest image decoded, in pixels (width * height). 40 megapixels covers every phone
#: camera; a 20000x20000 "bomb" (400 MP) is refused before decoding.
MAX_PIXELS = 40_000_000


def is_image_name(path: str | os.PathLike[str]) -> bool:
    """True for a visible file whose suffix is one of `IMAGE_SUFFIXES`."""
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def load_rgb(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode `path` to an RGB uint8 array of shape (height, width, 3).

    Raises `ImageError` with the reason (empty, truncated, not an image, too large).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"{path}: {width}x{height} is larger than the {max_pixels:,}-pixel "
                        "limit (possible decompression bomb); downscale it first"
                    )
                if width < 1 or height < 1:
                    raise ImageError(f"{path}: image has no pixels ({width}x{height})")
                img.seek(0)  # first frame of GIF / animated WebP
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: not a readable image (unknown or unsafe format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{path}: corrupt or truncated image ({exc})") from None


def decode_rgb(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Like `load_rgb` but from bytes in memory (used by the fuzz script and uploads)."""
    import io

    if not data:
        raise ImageError(f"{name}: empty data (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels or width < 1 or height < 1:
                    raise ImageError(f"{name}: unsupported image size {width}x{height}")
                img.seek(0)
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: not a readable image") from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None


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
