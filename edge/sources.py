"""Frame sources: cameras, the Pi camera, video files, streams, images. All yield RGB.

Every source has the same small interface (`Source`): `open()`, `read()` -> an RGB
uint8 frame or None at the end, `close()`, a `name`, an `is_live` flag and, where known,
`fps`. Colour conversion happens here, once: OpenCV and picamera2 deliver B,G,R in
memory, everything after a source sees R,G,B.

`open_source(spec)` turns a `--source` string into a source:

    0, 1, /dev/video0         a USB / laptop camera (OpenCV)
    rtsp://..., http(s)://... a network stream (OpenCV / FFmpeg)
    picam, picamera           the Raspberry Pi camera (picamera2, imported only here)
    clip.mp4, clip.avi        a video file
    a.jpg, photos/, "*.png"   a single image, a folder of images, or a glob
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from edge.errors import ImageError, SourceError
from edge.images import IMAGE_SUFFIXES, is_image_name, load_rgb

log = logging.getLogger("tledge.edge")

VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mjpeg", ".mjpg", ".h264"})
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
PICAMERA_NAMES = frozenset({"picam", "picamera", "picamera2"})


class Source(ABC):
    """A stream of RGB frames. Use as a context manager, or call open() / close()."""

    name: str = "source"
    is_live: bool = False  # a camera or stream: frames keep coming and can be missed
    fps: float | None = None  # frames per second of the source, when known

    @abstractmethod
    def open(self) -> None:
        """Start delivering frames. Raises `SourceError` with a remedy."""

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """The next RGB uint8 frame (H, W, 3), or None at the end of a finite source.

        A live source that stops delivering raises `SourceError` (the pipeline reconnects).
        """

    @abstractmethod
    def close(self) -> None:
        """Release the device or file. Safe to call twice."""

    def __enter__(self) -> "Source":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _OpenCVSource(Source):
    """Shared by cameras, streams and video files: one cv2.VideoCapture."""

    def __init__(self, target: int | str, name: str) -> None:
        self.target = target
        self.name = name
        self._cap: cv2.VideoCapture | None = None

    def _configure(self, cap: cv2.VideoCapture) -> None:
        """Hook for settings applied right after opening (resolution, buffering)."""

    def _open_params(self) -> list[int]:
        """Hook for properties that must be given when opening (e.g. network timeouts)."""
        return []

    def open(self) -> None:
        self.close()
        params = self._open_params()
        cap = cv2.VideoCapture(self.target, cv2.CAP_ANY, params) if params else cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            raise SourceError(self._open_failure())
        self._configure(cap)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and math.isfinite(fps) and 0 < fps < 1000 else None
        self._cap = cap

    def _open_failure(self) -> str:
        return f"Cannot open {self.name}"

    def _grab_bgr(self) -> np.ndarray | None:
        if self._cap is None:
            raise SourceError(f"{self.name} is not open; call open() first")
        ok, frame_bgr = self._cap.read()
        return frame_bgr if ok and frame_bgr is not None else None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _bgr_to_rgb(frame_bgr: np.ndarray) -> np.ndarray:
    if frame_bgr.ndim == 2:
        return cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2RGB)
    if frame_bgr.shape[2] == 4:
        return cv2.cvtColor(frame_bgr, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)


class CameraSource(_OpenCVSource):
    """A camera by index (0) or device path (/dev/video0), or an RTSP/HTTP stream URL.

    `size` = (width, height) in pixels asks the camera for that resolution (it may pick
    the nearest it supports). A failed read raises `SourceError`: the camera was lost.
    """

    is_live = True

    #: A network stream silent this long counts as lost (OpenCV's FFmpeg default is 30 s).
    STREAM_READ_TIMEOUT_S = 5.0
    STREAM_OPEN_TIMEOUT_S = 10.0

    def __init__(self, target: int | str, size: tuple[int, int] | None = None) -> None:
        super().__init__(target, _camera_name(target))
        self.size = size

    def _open_params(self) -> list[int]:
        if isinstance(self.target, str) and self.target.startswith(STREAM_SCHEMES):
            return [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.STREAM_OPEN_TIMEOUT_S * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.STREAM_READ_TIMEOUT_S * 1000),
            ]
        return []

    def _configure(self, cap: cv2.VideoCapture) -> None:
        if self.size is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver's queue short: we want fresh frames

    def _open_failure(self) -> str:
        if isinstance(self.target, str) and self.target.startswith(STREAM_SCHEMES):
            return f"Cannot open the stream {self.name}: check the URL, the network and the credentials"
        return (
            f"Cannot open {self.name}: check that it is connected, not used by another program, "
            "and that you may access it (on Linux: the 'video' group); list cameras with: ls /dev/video*"
        )

    def read(self) -> np.ndarray | None:
        frame_bgr = self._grab_bgr()
        if frame_bgr is None:
            raise SourceError(f"{self.name} stopped delivering frames")
        return _bgr_to_rgb(frame_bgr)


def _camera_name(target: int | str) -> str:
    if isinstance(target, int):
        return f"camera {target}"
    return re.sub(r"//[^/@]*@", "//***@", target)  # hide credentials in stream URLs


class VideoFileSource(_OpenCVSource):
    """A video file, read frame by frame. `read()` returns None at the end."""

    is_live = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(str(path), str(path))
        self.path = Path(path)

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"Video file not found: {self.path}")
        super().open()

    def _open_failure(self) -> str:
        return f"Cannot decode the video {self.path}: the file is damaged or its codec is not supported by OpenCV; convert it to MP4 (H.264) or MJPG AVI"

    def read(self) -> np.ndarray | None:
        frame_bgr = self._grab_bgr()
        return None if frame_bgr is None else _bgr_to_rgb(frame_bgr)


class ImageSource(Source):
    """A single image, every image in a folder (sorted), or a glob pattern.

    Files that cannot be decoded are skipped with a warning and listed in `skipped`.
    """

    is_live = False

    def __init__(self, spec: str | os.PathLike[str]) -> None:
        self.spec = str(spec)
        self.name = self.spec
        self.paths: list[Path] = []
        self.skipped: list[tuple[Path, str]] = []
        self.current: Path | None = None  # the file of the frame last returned
        self._next = 0

    def open(self) -> None:
        self.paths = list_images(self.spec)
        self._next = 0

    def read(self) -> np.ndarray | None:
        while self._next < len(self.paths):
            path = self.paths[self._next]
            self._next += 1
            try:
                frame_rgb = load_rgb(path)
            except ImageError as exc:
                log.warning("skipping %s", exc)
                self.skipped.append((path, str(exc)))
                continue
            self.current = path
            return frame_rgb
        return None

    def close(self) -> None:
        self._next = len(self.paths)


def list_images(spec: str) -> list[Path]:
    """Image files named by `spec` (a file, a folder, or a glob), sorted. Raises `SourceError`."""
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and is_image_name(p))
        where = f"the folder {path}"
    elif path.is_file():
        found = [path]
        where = str(path)
    elif glob.has_magic(spec):
        found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if os.path.isfile(p) and is_image_name(p))
        where = f"the pattern {spec!r}"
    else:
        raise SourceError(f"No such file, folder or camera: {spec}")
    if not found:
        raise SourceError(f"No images ({', '.join(sorted(s[1:] for s in IMAGE_SUFFIXES))}) in {where}")
    return found


PICAMERA_HINT = (
    "The Raspberry Pi camera needs picamera2, which is not importable here. On Raspberry Pi OS "
    "install it with: sudo apt install python3-picamera2 (and create the virtualenv with "
    "--system-site-packages so it can see it)"
)


class PiCameraSource(Source):
    """The Raspberry Pi camera through picamera2 (imported only when this source opens).

    The `main` stream is configured to `size` = (width, height), near the model input
    with the sensor's 4:3 shape, so the ISP does the heavy downscaling and the runtime's
    centre crop matches training. picamera2's "RGB888" format is B,G,R in memory; it is
    converted to RGB here, once. `camera_factory` replaces `picamera2.Picamera2` (tests).
    """

    is_live = True

    def __init__(self, size: tuple[int, int] = (320, 240), camera_num: int = 0, camera_factory: Callable[..., Any] | None = None) -> None:
        self.size = (_even(size[0]), _even(size[1]))
        self.camera_num = camera_num
        self.name = f"Pi camera {camera_num}"
        self._factory = camera_factory
        self._camera: Any = None

    def open(self) -> None:
        self.close()
        factory = self._factory or _import_picamera2()
        try:
            camera = factory(self.camera_num)
            config = camera.create_video_configuration(main={"size": self.size, "format": "RGB888"}, buffer_count=2)
            camera.configure(config)
            camera.start()
        except (RuntimeError, OSError, IndexError, ValueError) as exc:
            raise SourceError(f"Cannot start {self.name}: {exc}. Check the ribbon cable and that no other program uses the camera (rpicam-hello --list-cameras)") from None
        self._camera = camera

    def read(self) -> np.ndarray | None:
        if self._camera is None:
            raise SourceError(f"{self.name} is not open; call open() first")
        try:
            frame_bgr = self._camera.capture_array("main")
        except (RuntimeError, OSError) as exc:
            raise SourceError(f"{self.name} stopped delivering frames: {exc}") from None
        if frame_bgr is None or frame_bgr.ndim != 3:
            raise SourceError(f"{self.name} delivered an unexpected frame")
        return np.ascontiguousarray(frame_bgr[:, :, 2::-1])  # B,G,R(,X) -> R,G,B

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            try:
                camera.stop()
            finally:
                camera.close()


def _even(value: int) -> int:
    return max(2, int(value) + int(value) % 2)


PICAMERA_NUMPY_HINT = (
    "picamera2 could not be imported: {exc}. The apt-installed camera stack (picamera2, "
    "simplejpeg) is built for the system's numpy, and a newer numpy in the virtualenv hides "
    "it (Raspberry Pi OS Bookworm ships numpy 1.x). In the virtualenv, resolve tledge again with the pin "
    "(pip then picks an OpenCV built for numpy 1.x too): pip install tledge \"numpy<2\""
)


def _import_picamera2() -> Callable[..., Any]:
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]
    except ImportError:
        raise SourceError(PICAMERA_HINT) from None
    except ValueError as exc:  # "numpy.dtype size changed, may indicate binary incompatibility"
        if "numpy" not in str(exc) and "binary incompatibility" not in str(exc):
            raise
        raise SourceError(PICAMERA_NUMPY_HINT.format(exc=exc)) from None
    return Picamera2


def picamera_size_for(model_size: tuple[int, int] | None) -> tuple[int, int]:
    """A 4:3 capture size (width, height) that covers a model input of (height, width)."""
    if model_size is None:
        return (320, 240)
    height = max(model_size[0], math.ceil(model_size[1] * 3 / 4))
    return (_even(math.ceil(height * 4 / 3)), _even(height))


def open_source(spec: str, model_size: tuple[int, int] | None = None, camera_size: tuple[int, int] | None = None) -> Source:
    """Build the source named by a `--source` string (not yet opened; see module doc).

    `model_size` = (height, width) of the model input sizes the Pi camera's stream;
    `camera_size` = (width, height) asks an OpenCV camera for a resolution.
    """
    spec = spec.strip()
    if not spec:
        raise SourceError("--source is empty; give a camera index (0), a video, an image, a folder, a glob, a URL or 'picam'")
    if re.fullmatch(r"\d+", spec):
        return CameraSource(int(spec), camera_size)
    if spec.startswith("/dev/video"):
        return CameraSource(spec, camera_size)
    if spec.lower().startswith(STREAM_SCHEMES):
        return CameraSource(spec)
    if spec.lower() in PICAMERA_NAMES:
        return PiCameraSource(picamera_size_for(model_size))
    path = Path(spec)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoFileSource(path)
    if path.is_file() and not is_image_name(path):
        return VideoFileSource(path)  # unknown suffix: let OpenCV try, it says if it cannot
    if path.suffix.lower() in VIDEO_SUFFIXES and not glob.has_magic(spec):
        raise SourceError(f"Video file not found: {spec}")
    return ImageSource(spec)
