"""Capture labelled frames into the training layout: DATA_DIR/<label>/<unique>.jpg.

A user builds a dataset with the same camera that will run the model, so the training
images see the same sensor, lens, light and colour pipeline as the device.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edge.atomic import write_bytes
from edge.errors import SourceError, TledgeError
from edge.sources import Source

_BAD_LABEL = re.compile(r"[\\/:*?\"<>|\x00-\x1f]")


@dataclass(frozen=True)
class CollectOptions:
    """What to save: `count` frames of class `label`, one every `interval_s` seconds."""

    label: str
    count: int = 20
    interval_s: float = 1.0  # live sources: wall-clock seconds; files: seconds of video
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        label = self.label.strip()
        if not label or label in (".", "..") or label.startswith(".") or _BAD_LABEL.search(label):
            raise TledgeError(
                f"--label {self.label!r} cannot be a folder name; use letters, digits, spaces, '-' or '_' "
                "(no slashes, no leading dot)"
            )
        if self.count < 1 or self.interval_s < 0 or not 1 <= self.jpeg_quality <= 100:
            raise TledgeError("--count must be >= 1, --interval >= 0 and --quality within 1..100")


def write_jpeg_atomic(folder: Path, frame_rgb: np.ndarray, stem: str, quality: int) -> Path:
    """Encode `frame_rgb` as JPEG and write it under a new unique name, atomically."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise TledgeError(f"OpenCV could not encode a {frame_rgb.shape} frame as JPEG")
    return write_bytes(folder / f"{stem}-{uuid.uuid4().hex[:8]}.jpg", encoded.tobytes())


def collect_frames(
    source: Source,
    data_dir: str | os.PathLike[str],
    options: CollectOptions,
    on_saved: Callable[[Path, int], None] | None = None,
) -> list[Path]:
    """Read `source` and save `options.count` frames into DATA_DIR/<label>/. Returns the paths.

    Live sources are read continuously (so each saved frame is fresh) and a frame is kept
    every `interval_s` seconds of wall-clock time; video files are sampled every
    `interval_s` seconds of video; image sources save every image.
    """
    folder = Path(data_dir) / options.label.strip()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TledgeError(f"Cannot create {folder}: {exc.strerror or exc}; choose a writable DATA_DIR") from None
    session = time.strftime("%Y%m%d-%H%M%S")
    written: list[Path] = []
    next_due = 0.0  # seconds on the source's clock
    with source:
        start, frame_no = time.monotonic(), 0
        while len(written) < options.count:
            try:
                frame_rgb = source.read()
            except SourceError:
                if written:
                    break  # keep what was saved; the caller reports the count
                raise
            if frame_rgb is None:
                break
            clock = _source_clock(source, start, frame_no)
            frame_no += 1
            if clock is not None and clock + 1e-9 < next_due:
                continue
            path = write_jpeg_atomic(folder, frame_rgb, f"{options.label.strip()}-{session}-{len(written):04d}", options.jpeg_quality)
            written.append(path)
            next_due = (clock or 0.0) + options.interval_s
            if on_saved is not None:
                on_saved(path, len(written))
    return written


def _source_clock(source: Source, start: float, frame_no: int) -> float | None:
    """Seconds since the start: wall clock for live sources, the video timeline for files,
    None for images (no timeline: every image is saved)."""
    if source.is_live:
        return time.monotonic() - start
    if source.fps:
        return frame_no / source.fps
    return None
