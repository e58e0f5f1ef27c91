"""Generate the bad-input corpus: every odd file a phone, a web download or a careless
copy can put in a dataset folder, written cheaply with Pillow, OpenCV, numpy and zlib.

Nothing here allocates the pixels a "bomb" claims: the 20000x20000 PNG is a valid 1-bit
file streamed through zlib (about 50 KB on disk), so only a decoder that ignores the
header would ever pay for its 400 megapixels.

Each `ImageCase` says what `edge.images.load_rgb` must do with the file: decode it to a
given (height, width) or refuse it with `ImageError` whose message contains `reason`.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: Orientation tag in EXIF (0x0112); 6 = "rotate 90 CW to display".
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageCase:
    """One file of the corpus and what decoding it must give."""

    name: str
    path: Path
    shape: tuple[int, int] | None  # (height, width) after decoding; None: must be refused
    reason: str = ""  # a word the refusal message must contain


def gradient_rgb(height: int = 24, width: int = 32) -> np.ndarray:
    """A deterministic RGB image with distinct rows and columns (so rotations show)."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), (xx + yy) % 256], axis=2).astype(np.uint8)


def jpeg_bytes(rgb: np.ndarray, **save_args: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90, **save_args)
    return buffer.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid, all-black 1-bit PNG of `width` x `height`, streamed through zlib.

    The raw scanlines (1 filter byte + width/8 bytes each: 50 MB for 20000x20000) are
    never held in memory at once; the file is about 50 KB.
    """
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row * 500) for _ in range(height // 500)]
    parts.append(compressor.compress(row * (height % 500)))
    parts.append(compressor.flush())
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b"")


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims `width` x `height` (RGB), with an empty IDAT: no pixels."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + _png_chunk(b"IDAT", b"") + _png_chunk(b"IEND", b"")


def huge_claim_jpeg(width: int, height: int) -> bytes:
    """A small JPEG whose SOF0 marker is patched to claim `width` x `height`."""
    real = jpeg_bytes(gradient_rgb(8, 8))
    sof = real.index(b"\xff\xc0")  # SOF0: length(2) precision(1) height(2) width(2)
    patched = bytearray(real)
    patched[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(patched)


def eps_bytes() -> bytes:
    """A tiny EPS file: Pillow would hand it to Ghostscript if it were allowed to open it."""
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"


def tiff_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gradient_rgb()).save(buffer, format="TIFF")
    return buffer.getvalue()


def exif_rotated_jpeg(orientation: int = 6, height: int = 20, width: int = 40) -> bytes:
    """A `width` x `height` JPEG (stored pixels) carrying EXIF Orientation=`orientation`."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return jpeg_bytes(gradient_rgb(height, width), exif=exif.tobytes())


def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gradient_rgb()).convert("CMYK").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png16() -> bytes:
    """A 16-bit grayscale PNG using the full 0..65535 range."""
    ramp = (np.linspace(0, 65535, 24 * 32).reshape(24, 32)).astype(np.uint16)
    return png_bytes(Image.fromarray(ramp))  # uint16 -> mode I;16


def palette_png(transparent: bool = False) -> bytes:
    img = Image.fromarray(gradient_rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    if transparent:
        img.info["transparency"] = 0
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", **({"transparency": 0} if transparent else {}))
    return buffer.getvalue()


def rgba_png() -> bytes:
    rgba = np.dstack([gradient_rgb(), np.full((24, 32), 128, np.uint8)])
    return png_bytes(Image.fromarray(rgba, mode="RGBA"))


#: Cases that are links or odd names rather than odd bytes (made by `write_image_corpus`).
LINK_CASE_NAMES = ("symlink_loop.jpg", "dangling_link.jpg", "non_utf8_name.jpg")


def image_specs() -> list[tuple[str, bytes, tuple[int, int] | None, str]]:
    """(file name, bytes, decoded (height, width) or None, word of the refusal) per file."""
    photo_jpeg = jpeg_bytes(gradient_rgb(480, 640))  # big enough that half of it is pixel data
    good_png = png_bytes(Image.fromarray(gradient_rgb()))
    files: list[tuple[str, bytes, tuple[int, int] | None, str]] = [
        ("zero_bytes.jpg", b"", None, "empty"),
        ("truncated.jpg", photo_jpeg[: len(photo_jpeg) // 2], None, "truncated"),
        ("truncated.png", good_png[: len(good_png) // 2], None, "truncated"),
        ("header_only_signature.png", good_png[:8], None, "image"),
        ("text_named.jpg", "just some notes, not a photo\n".encode(), None, "not a readable image"),
        ("html_named.png", b"<!doctype html><title>404</title>", None, "not a readable image"),
        ("cmyk.jpg", cmyk_jpeg(), (24, 32), ""),
        ("sixteen_bit.png", png16(), (24, 32), ""),
        ("palette.png", palette_png(), (24, 32), ""),
        ("palette_transparent.png", palette_png(transparent=True), (24, 32), ""),
        ("rgba.png", rgba_png(), (24, 32), ""),
        ("gray.png", png_bytes(Image.fromarray(gradient_rgb()).convert("L")), (24, 32), ""),
        ("gray_alpha.png", png_bytes(Image.fromarray(gradient_rgb()).convert("LA")), (24, 32), ""),
        ("gray.jpg", jpeg_bytes(np.asarray(Image.fromarray(gradient_rgb()).convert("L"))), (24, 32), ""),
        ("one_pixel.png", png_bytes(Image.new("RGB", (1, 1), (10, 200, 30))), (1, 1), ""),
        ("one_pixel.jpg", jpeg_bytes(np.full((1, 1, 3), 90, np.uint8)), (1, 1), ""),
        ("bomb_20000x20000.png", bomb_png(), None, "limit"),
        ("bomb_header_only.png", header_only_png(20000, 20000), None, "limit"),
        ("bomb_claims_60000x60000.jpg", huge_claim_jpeg(60000, 60000), None, "limit"),
        ("too_big_header_only_8000x6000.png", header_only_png(8000, 6000), None, "limit"),
        ("eps_named.jpg", eps_bytes(), None, "not a readable image"),
        ("tiff_named.jpg", tiff_bytes(), None, "not a readable image"),
        ("exif_orientation_6.jpg", exif_rotated_jpeg(6), (40, 20), ""),
        ("exif_orientation_3.jpg", exif_rotated_jpeg(3), (20, 40), ""),
        ("png_named.jpg", good_png, (24, 32), ""),
    ]
    return files


def image_case_names() -> list[str]:
    """Every case name, for test parametrisation."""
    return [spec[0] for spec in image_specs()] + list(LINK_CASE_NAMES)


def write_image_corpus(folder: Path) -> list[ImageCase]:
    """Write every bad (and merely unusual) image into `folder`; return the cases."""
    folder.mkdir(parents=True, exist_ok=True)
    good_jpeg = jpeg_bytes(gradient_rgb())
    cases = []
    for name, data, shape, reason in image_specs():
        path = folder / name
        path.write_bytes(data)
        cases.append(ImageCase(name, path, shape, reason))
    loop = folder / "symlink_loop.jpg"
    os.symlink(loop.name, loop)  # points at itself: stat() fails with ELOOP
    cases.append(ImageCase("symlink_loop.jpg", loop, None, "cannot read"))
    dangling = folder / "dangling_link.jpg"
    os.symlink("no_such_target.jpg", dangling)
    cases.append(ImageCase("dangling_link.jpg", dangling, None, "cannot read"))
    odd = os.fsdecode(b"caf\xe9_latin1_\xff.jpg")  # not UTF-8: Python keeps it as surrogates
    (folder / odd).write_bytes(good_jpeg)
    cases.append(ImageCase("non_utf8_name.jpg", folder / odd, (24, 32), ""))
    return cases


# -- datasets -----------------------------------------------------------------------------

#: Class names a user's folders really have: spaces, accents, CJK.
ODD_CLASS_NAMES = ("t-shirt à manches", "猫 cat", "plain")


@dataclass(frozen=True)
class DirtyDataset:
    """A folder-per-class dataset with the whole image corpus mixed into one class."""

    root: Path
    refused: tuple[str, ...]  # file names tledge train must skip and name
    usable: dict[str, int]  # class -> images that must be used


def noisy_rgb(rng: np.random.Generator, size: int = 40) -> np.ndarray:
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def write_dirty_dataset(root: Path, good_per_class: int = 6, seed: int = 0) -> DirtyDataset:
    """Three oddly named classes of small good PNGs; class "plain" also holds every file of
    the bad-image corpus, a 300 MB sparse file named .jpg, a directory symlink loop, a
    hidden file and a text file."""
    rng = np.random.default_rng(seed)
    usable: dict[str, int] = {}
    for name in ODD_CLASS_NAMES:
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(good_per_class):
            (folder / f"good_{i}.png").write_bytes(png_bytes(Image.fromarray(noisy_rgb(rng))))
        usable[name] = good_per_class
    plain = root / "plain"
    cases = write_image_corpus(plain / "corpus")
    usable["plain"] += sum(1 for case in cases if case.shape is not None)
    refused = [case.path.name for case in cases if case.shape is None]
    with open(plain / "huge_sparse.jpg", "wb") as stream:  # 300 MB on paper, no disk used
        stream.truncate(300 * 1024 * 1024)
    refused.append("huge_sparse.jpg")
    os.symlink("..", plain / "corpus" / "up")  # plain/corpus/up -> plain: a directory loop
    (plain / ".hidden.jpg").write_bytes(jpeg_bytes(gradient_rgb()))
    (plain / "notes.txt").write_text("not an image\n", encoding="utf-8")
    return DirtyDataset(root, tuple(refused), usable)
