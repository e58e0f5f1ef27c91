"""Sources: --source parsing, RGB order from OpenCV files, images/folders/globs with bad
files, and the Pi camera behind a stand-in Picamera2 (the hardware is absent here)."""

from __future__ import annotations

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
    """Behaves like picamera2.Picamera2 for what PiCameraSource uses. Its 'RGB888' frames
    are B,G,R in memory, as the real library's are."""

    instances: list["StandInPicamera2"] = []

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.config: dict | None = None
        self.started = self.closed = False
        StandInPicamera2.instances.append(self)

    def create_video_configuration(self, main: dict, buffer_count: int = 4) -> dict:
        return {"main": dict(main), "buffer_count": buffer_count}

    def configure(self, config: dict) -> None:
        self.config = config

    def start(self) -> None:
        self.started = True

    def capture_array(self, stream: str = "main") -> np.ndarray:
        assert self.started and stream == "main"
        width, height = self.config["main"]["size"]
        frame_bgr = np.zeros((height, width, 3), np.uint8)
        frame_bgr[..., 0] = 255  # blue, in B,G,R memory order
        return frame_bgr

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


def test_pi_camera_configures_rgb888_near_the_model_and_converts_to_rgb() -> None:
    size = picamera_size_for((224, 224))
    assert size[1] >= 224 and size[0] >= 224 and abs(size[0] / size[1] - 4 / 3) < 0.02
    source = PiCameraSource(size, camera_factory=StandInPicamera2)
    with source:
        camera = StandInPicamera2.instances[-1]
        assert camera.config["main"] == {"size": size, "format": "RGB888"}
        frame_rgb = source.read()
    assert frame_rgb.shape == (size[1], size[0], 3)
    assert frame_rgb[..., 2].min() == 255 and frame_rgb[..., 0].max() == 0  # blue is in channel 2
    assert frame_rgb.flags["C_CONTIGUOUS"] and camera.closed


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
