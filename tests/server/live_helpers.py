"""Helpers for the live view tests: a tiny real .tflite, a generated colour video, a running pipeline.

The model is made by the real TFLite converter from a two-op graph (mean colour ->
softmax over red / green / blue), so its answer on each video segment is known by
construction, and it runs in well under a millisecond on the test machine.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest

from edge.bundle import ModelInfo
from edge.classifier import Classifier
from edge.pipeline import Pipeline, PipelineOptions
from edge.serve.stream import BOUNDARY
from edge.sources import VideoFileSource

COLOURS: dict[str, tuple[int, int, int]] = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}  # RGB
SIZE = 32  # model input, pixels


def http_get(host: str, port: int, path: str, headers: dict[str, str] | None = None, source: str | None = None,
             context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    """One raw GET: the path goes on the wire exactly as written (no client-side normalisation).

    `source`: a local address to connect from (another client); `context`: HTTPS. The body of
    a stream (MJPEG, server-sent events) is not read."""
    cls = http.client.HTTPSConnection if context else http.client.HTTPConnection
    kwargs = {"context": context} if context else {}
    conn = cls(host, port, timeout=10, source_address=(source, 0) if source else None, **kwargs)
    try:
        conn.putrequest("GET", path, skip_host="Host" in (headers or {}), skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        streaming = response.getheader("Content-Type", "").startswith(("multipart/", "text/event-stream"))
        body = b"" if streaming else response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def make_colour_model(folder: Path) -> tuple[Path, Path]:
    """(model.tflite, labels.txt) of a real float32 TFLite colour classifier in `folder`."""
    tf = pytest.importorskip("tensorflow", reason="making the test model needs the [train] extra")
    weights = tf.constant(np.eye(3, dtype=np.float32) * 6.0)  # channel mean -> logit

    @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
    def colour(pixels: "tf.Tensor") -> "tf.Tensor":
        return tf.nn.softmax(tf.matmul(tf.reduce_mean(pixels, axis=[1, 2]), weights))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([colour.get_concrete_function()], colour)
    model = folder / "colours.tflite"
    model.write_bytes(converter.convert())
    labels = folder / "labels.txt"
    labels.write_text("\n".join(COLOURS) + "\n", encoding="utf-8")
    return model, labels


def write_colour_video(
    path: Path, frames_per_colour: int = 20, fps: float = 20.0, size: tuple[int, int] = (160, 120), noise: float = 12.0
) -> list[str]:
    """An MJPG .avi: red, green, blue segments with noise and a moving bright bar; returns the truth per frame."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    rng = np.random.default_rng(0)
    truth: list[str] = []
    try:
        for name, rgb in COLOURS.items():
            for i in range(frames_per_colour):
                frame = np.clip(np.array(rgb) + rng.normal(0, noise, (height, width, 3)), 0, 255).astype(np.uint8)
                x = (i * 7) % (width - 12)
                frame[:, x : x + 12] = 255  # moves every frame: a live image changes
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                truth.append(name)
    finally:
        writer.release()
    return truth


class Counter:
    """A sink that counts the frames the pipeline processed and their labels."""

    def __init__(self) -> None:
        self.frames = 0
        self.labels: list[str | None] = []

    def emit(self, frame_rgb: np.ndarray, result) -> None:  # noqa: ANN001 - FrameResult
        self.frames += 1
        self.labels.append(result.label)

    def close(self) -> None:
        pass


@contextmanager
def running_pipeline(info: ModelInfo, video: Path, sinks: list, **options) -> Iterator[Pipeline]:  # noqa: ANN003
    """Run the real pipeline on `video` (looped, at its own frame rate) in a thread."""
    opts = PipelineOptions(**{"realtime": True, "loop": True, "top_k": 3, **options})
    pipeline = Pipeline(Classifier(info, threads=1), VideoFileSource(video), sinks, opts)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            pipeline.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="test-pipeline", daemon=True)
    thread.start()
    try:
        yield pipeline
    finally:
        pipeline.stop("test over")
        thread.join(timeout=15)
    assert not thread.is_alive(), "the pipeline did not stop"
    if errors:
        raise errors[0]


class MjpegViewer(threading.Thread):
    """A well-behaved viewer of /stream.mjpg: reads every part, keeps arrival times and the last JPEG."""

    def __init__(self, port: int, query: str = "", timeout: float = 10.0, headers: dict[str, str] | None = None) -> None:
        super().__init__(name=f"viewer-{port}", daemon=True)
        self.port, self.query, self.timeout, self.headers = port, query, timeout, headers or {}
        self.indices: list[int] = []  # X-Frame-Index of each part
        self.times: list[float] = []  # time.monotonic() of each complete frame, s
        self.last_jpeg = b""
        self.content_type = ""
        self.error: BaseException | None = None
        self.ended = threading.Event()  # the server closed the stream
        self._halt = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            conn.request("GET", f"/stream.mjpg{self.query}", headers=self.headers)
            response = conn.getresponse()
            self.content_type = response.getheader("Content-Type", "")
            while not self._halt.is_set():
                line = response.readline()
                if not line:
                    self.ended.set()
                    return
                if line.strip() != f"--{BOUNDARY}".encode():
                    continue
                length = 0
                while (header := response.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode("ascii").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    elif name.lower() == "x-frame-index":
                        self.indices.append(int(value))
                self.last_jpeg = response.read(length)
                self.times.append(time.monotonic())
        except (OSError, http.client.HTTPException) as exc:
            if not self._halt.is_set():
                self.error = exc
        finally:
            conn.close()

    def frames_between(self, start: float, end: float) -> int:
        return sum(start <= t < end for t in self.times)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=self.timeout + 5)


def wait_until(condition, timeout: float, step: float = 0.05) -> bool:  # noqa: ANN001 - a callable
    """Poll `condition()` until it is true or `timeout` seconds pass (bounded loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())
