"""Sources: --source parsing, RGB order from OpenCV files, images/folders/globs with bad
files, and the Pi camera behind a stand-in Picamera2 (the hardware is absent here)."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import SourceError
from edge.sources import (
    CameraSource,
    ImageSource,
    PiCameraSource,
    VideoFileSource,
    open_source,
    picamera_size_for,
)


def write_rgb_video(path: Path, colour_rgb: tuple[int, int, int], frames: int = 5) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    frame_rgb = np.zeros((48, 64, 3), np.uint8)
    frame_rgb[:] = colour_rgb
    for _ in range(frames):
        writer.write(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_source_specs_pick_the_right_source(tmp_path) -> None:
    video = write_rgb_video(tmp_path / "clip.avi", (200, 0, 0))
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    assert isinstance(open_source("0"), CameraSource) and open_source("2").target == 2
    assert isinstance(open_source("/dev/video1"), CameraSource)
    stream = open_source("rtsp://user:secret@cam.local/stream1")
    assert isinstance(stream, CameraSource) and stream.is_live and "secret" not in stream.name
    assert isinstance(open_source("http://cam.local/mjpg"), CameraSource)
    assert isinstance(open_source("picam"), PiCameraSource)
    assert isinstance(open_source(str(video)), VideoFileSource)
    for spec in (str(image), str(tmp_path), str(tmp_path / "*.png")):
        assert isinstance(open_source(spec), ImageSource)
    for spec in ("", str(tmp_path / "nope.mp4"), str(tmp_path / "nope.jpg")):
        with pytest.raises(SourceError):
            open_source(spec).open()


def test_video_file_frames_are_rgb_and_end_with_none(tmp_path) -> None:
    path = write_rgb_video(tmp_path / "red.avi", (220, 20, 20), frames=4)
    with VideoFileSource(path) as source:
        frames = []
        while (frame_rgb := source.read()) is not None:
            frames.append(frame_rgb)
    assert len(frames) == 4 and source.fps == pytest.approx(10.0)
    assert frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    red, green, blue = (frames[0][..., c].mean() for c in range(3))
    assert red > 180 and green < 60 and blue < 60


def test_damaged_video_is_a_source_error(tmp_path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError, match="Cannot decode"):
        VideoFileSource(bad).open()


def test_camera_that_cannot_open_says_how_to_check(tmp_path) -> None:
    with pytest.raises(SourceError, match="ls /dev/video"):
        CameraSource(str(tmp_path / "video99")).open()


def test_camera_source_raises_when_frames_stop(tmp_path) -> None:
    """OpenCV reads a file through the same camera code; its end looks like a lost camera."""
    path = write_rgb_video(tmp_path / "cam.avi", (0, 0, 200), frames=2)
    with CameraSource(str(path)) as camera:
        assert camera.read()[..., 2].mean() > 150  # blue stays blue
        camera.read()
        with pytest.raises(SourceError, match="stopped delivering"):
            camera.read()


def test_images_folder_and_glob_skip_bad_files(tmp_path) -> None:
    for name, value in (("b.png", 10), ("a.jpg", 200)):
        cv2.imwrite(str(tmp_path / name), np.full((12, 16, 3), value, np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored")
    with ImageSource(tmp_path) as source:
        names = []
        while source.read() is not None:
            names.append(source.current.name)
    assert names == ["a.jpg", "b.png"]
    assert [p.name for p, _ in source.skipped] == ["broken.png"]
    assert [p.name for p in ImageSource(str(tmp_path / "*.png")).__enter__().paths] == ["b.png", "broken.png"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="No images"):
        ImageSource(empty).open()


class StandInPicamera2:
    """Behaves like picamera2.Picamera2 for what PiCameraSource uses, with the checks the
    real library makes, so a call it would reject fails here too.

    Checked against raspberrypi/picamera2 (picamera2/picamera2.py and
    picamera2/request.py, read through the search tool; the library itself comes from
    Raspberry Pi's apt archive and cannot be installed here):
    - `Picamera2.__init__(camera_num=0, ...)`: the camera index is the first argument.
    - `create_video_configuration(main={}, lores=None, raw={}, ..., buffer_count=6, ...)`:
      `main` is merged into {"format": "XBGR8888", "size": (1280, 720)} by
      `_make_initial_stream_config`, which accepts only the keys "format" and "size"
      (ValueError otherwise); `align_stream(optimal=False)` rounds the width down to even.
    - `configure` -> `check_stream_config`: the size must be a (width, height) *tuple* of
      even numbers and the format a known name, else RuntimeError; libcamera's
      `validate()` may then adjust the size ("Camera configuration has been adjusted"),
      and `_update_stream_config` writes the delivered size back into the config.
    - `start()` runs a NullPreview event loop by default (show_preview=False), so
      `capture_array` does not block forever; it raises RuntimeError if not configured.
    - `capture_array(name="main", ...)` -> `Helpers.make_array`: "RGB888" becomes an
      (height, width, 3) uint8 array; `make_image` maps "RGB888" to PIL's raw mode "BGR",
      i.e. the bytes are B,G,R in memory. An unknown stream name raises RuntimeError.
    - `close()` calls `stop()` itself and returns early when already closed; `stop()` on
      a stopped camera only logs.
    """

    instances: list["StandInPicamera2"] = []
    FORMATS = ("RGB888", "BGR888", "XBGR8888", "XRGB8888", "YUV420", "YVU420")

    def __init__(self, camera_num: int = 0, adjust_to: tuple[int, int] | None = None) -> None:
        self.camera_num = camera_num
        self.adjust_to = adjust_to  # the size libcamera would deliver instead, if any
        self.config: dict | None = None
        self.started = False
        self.is_open = True
        self.closed = False
        StandInPicamera2.instances.append(self)

    def create_video_configuration(self, main: dict | None = None, lores: dict | None = None, raw: dict | None = None, transform: object = None, colour_space: object = None, buffer_count: int = 6, controls: dict | None = None, display: str | None = "main", encode: str | None = "main", queue: bool = True) -> dict:
        stream = {"format": "XBGR8888", "size": (1280, 720)}
        for key, value in (main or {}).items():
            if key not in ("format", "size"):
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are ('format', 'size')")
            stream[key] = value
        width, height = stream["size"]
        stream["size"] = (width - width % 2, height - height % 2)
        return {"use_case": "video", "main": stream, "lores": lores, "raw": raw, "buffer_count": buffer_count, "display": display, "encode": encode, "queue": queue}

    def configure(self, config: dict) -> None:
        main = config["main"]
        if main["format"] not in self.FORMATS:
            raise RuntimeError(f"Bad format {main['format']} in stream main")
        size = main["size"]
        if type(size) is not tuple or len(size) != 2:
            raise RuntimeError("size in main stream should be (width, height)")
        if size[0] % 2 or size[1] % 2:
            raise RuntimeError("width and height should be even")
        self.requested = dict(main)
        if self.adjust_to is not None:
            config = {**config, "main": {**main, "size": self.adjust_to}}
        self.config = config

    def start(self) -> None:
        if self.config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def capture_array(self, name: str = "main", wait: object = None) -> np.ndarray:
        assert self.started, "the real capture_array would block: no frames before start()"
        if self.config.get(name) is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        width, height = self.config[name]["size"]
        channels = 4 if self.config[name]["format"].startswith("X") else 3
        frame_bgr = np.zeros((height, width, channels), np.uint8)
        frame_bgr[..., 0] = 255  # blue first: "RGB888" is B,G,R in memory
        return frame_bgr

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        if not self.is_open:
            return
        self.stop()
        self.is_open = False
        self.closed = True


def test_pi_camera_configures_rgb888_near_the_model_and_converts_to_rgb() -> None:
    size = picamera_size_for((224, 224))
    assert size[1] >= 224 and size[0] >= 224 and abs(size[0] / size[1] - 4 / 3) < 0.02
    source = PiCameraSource(size, camera_factory=StandInPicamera2)
    with source:
        camera = StandInPicamera2.instances[-1]
        assert camera.requested == {"size": size, "format": "RGB888"}
        assert camera.config["buffer_count"] >= 2  # the real queue keeps one request back
        frame_rgb = source.read()
    assert frame_rgb.shape == (size[1], size[0], 3)
    assert frame_rgb[..., 2].min() == 255 and frame_rgb[..., 0].max() == 0  # blue is in channel 2
    assert frame_rgb.flags["C_CONTIGUOUS"] and camera.closed
    source.close()  # twice is safe, as the real close() is


def test_pi_camera_takes_the_size_libcamera_delivers() -> None:
    """libcamera may adjust the requested size; frames come at the delivered size, as RGB."""
    source = PiCameraSource((300, 224), camera_factory=lambda num: StandInPicamera2(num, adjust_to=(320, 240)))
    with source:
        frame_rgb = source.read()
    assert frame_rgb.shape == (240, 320, 3) and frame_rgb[..., 2].min() == 255


def test_pi_camera_odd_sizes_are_made_even_before_configure() -> None:
    """check_stream_config rejects odd widths/heights; PiCameraSource rounds them up first."""
    source = PiCameraSource((299, 225), camera_factory=StandInPicamera2)
    with source:
        assert StandInPicamera2.instances[-1].requested["size"] == (300, 226)


def test_pi_camera_without_picamera2_names_the_install_command() -> None:
    try:
        import picamera2  # noqa: F401

        pytest.skip("picamera2 is installed here")
    except ImportError:
        pass
    with pytest.raises(SourceError, match="apt install python3-picamera2"):
        PiCameraSource().open()


def test_http_stream_is_read_as_a_live_source(tmp_path) -> None:
    """A real HTTP server on localhost serves a video; OpenCV (FFmpeg) reads it as a stream."""
    import functools
    import http.server
    import threading

    write_rgb_video(tmp_path / "live.avi", (20, 200, 20), frames=6)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = open_source(f"http://127.0.0.1:{server.server_address[1]}/live.avi")
        assert isinstance(source, CameraSource) and source.is_live
        try:
            source.open()
        except SourceError:
            pytest.skip("this OpenCV build cannot read HTTP streams (no FFmpeg backend)")
        with source:
            frame_rgb = source.read()
            assert frame_rgb[..., 1].mean() > 150 > frame_rgb[..., 0].mean()  # green, in RGB order
            for _ in range(5):
                source.read()
            with pytest.raises(SourceError, match="stopped delivering"):  # the stream ended
                source.read()
    finally:
        server.shutdown()
        server.server_close()


def test_pi_camera_with_a_numpy_abi_mismatch_names_the_pin(tmp_path, monkeypatch) -> None:
    """A venv made with --system-site-packages gets numpy 2 from pip, while Bookworm's apt
    picamera2 imports simplejpeg built for numpy 1.x: importing it raises ValueError
    ("numpy.dtype size changed", raspberrypi/picamera2 issues #1088 and #1211). A package
    that fails the same way stands in for it here."""
    package = tmp_path / "picamera2"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise ValueError('numpy.dtype size changed, may indicate binary incompatibility. "
        "Expected 96 from C header, got 88 from PyObject')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    with pytest.raises(SourceError, match=r'numpy<2'):
        PiCameraSource().open()
