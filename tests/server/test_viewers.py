"""Viewers of the MJPEG stream: several at once, bounded rate and size, vanished and stalled ones."""

from __future__ import annotations

import socket
import struct
import threading
import time

import cv2
import numpy as np
from live_helpers import Counter, MjpegViewer, running_pipeline, wait_until

from edge.results import FrameResult
from edge.serve import BOUNDARY, LiveViewSink, ServeOptions, encode_frame


def decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


def test_several_viewers_at_once(colour_info, colour_video) -> None:
    sink = LiveViewSink(ServeOptions(port=0, stream_fps=10), colour_info)
    with running_pipeline(colour_info, colour_video, [sink]):
        viewers = [MjpegViewer(sink.port) for _ in range(4)]
        for viewer in viewers:
            viewer.start()
        assert wait_until(lambda: sink.viewers == 4, 10)
        assert wait_until(lambda: all(len(v.times) >= 8 for v in viewers), 15)
        for viewer in viewers:
            viewer.stop()
    for viewer in viewers:
        assert viewer.error is None, viewer.error
        assert viewer.content_type == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        assert decode(viewer.last_jpeg).shape == (120, 160, 3)


def test_stream_rate_is_bounded(colour_info, colour_video) -> None:
    sink = LiveViewSink(ServeOptions(port=0, stream_fps=4), colour_info)
    counter = Counter()
    with running_pipeline(colour_info, colour_video, [sink, counter]):  # the video plays at 20 fps
        viewer = MjpegViewer(sink.port)
        viewer.start()
        assert wait_until(lambda: len(viewer.times) >= 1, 10)
        start, processed = time.monotonic(), counter.frames
        time.sleep(3.0)
        end = time.monotonic()
        viewer.stop()
        processed = counter.frames - processed
    sent = viewer.frames_between(start, end)
    assert 6 <= sent <= 4 * 3 + 2, sent  # about 4 fps, never the source's 20
    assert processed >= 2 * sent, (processed, sent)  # inference is not held to the stream rate


def test_frame_size_and_quality_are_bounded(colour_info) -> None:
    rng = np.random.default_rng(0)
    frame_rgb = rng.integers(0, 255, (480, 1280, 3), dtype=np.uint8)
    result = FrameResult(0, 0.0, ((0, "red", 0.9),), 1.0, 10.0, 0)
    small = decode(encode_frame(frame_rgb, result, max_width=320, quality=70))
    assert small.shape == (120, 320, 3)  # aspect ratio kept
    assert len(encode_frame(frame_rgb, result, 640, 30)) < len(encode_frame(frame_rgb, result, 640, 90))


def test_overlay_is_drawn_on_the_stream(colour_info) -> None:
    frame_rgb = np.full((120, 160, 3), (40, 60, 220), np.uint8)
    result = FrameResult(0, 0.0, ((2, "blue", 0.97),), 1.0, 10.0, 0)
    drawn = decode(encode_frame(frame_rgb, result, 640, 90)).astype(int)
    plain = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR).astype(int)
    changed = np.abs(drawn - plain).max(axis=2) > 60
    assert changed[:40].mean() > 0.02  # text in the top band
    assert changed[60:].mean() < 0.01  # the rest is the picture


def test_a_vanished_viewer_stalls_nothing(colour_info, colour_video) -> None:
    sink = LiveViewSink(ServeOptions(port=0, stream_fps=10), colour_info)
    counter = Counter()
    with running_pipeline(colour_info, colour_video, [sink, counter]):
        steady = MjpegViewer(sink.port)
        steady.start()
        leaver = socket.create_connection(("127.0.0.1", sink.port), timeout=5)
        leaver.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert BOUNDARY.encode() in leaver.recv(65536) + leaver.recv(65536)  # it got a frame
        assert wait_until(lambda: sink.viewers == 2, 5)
        # Vanish: reset the connection without a goodbye (SO_LINGER 0 sends RST).
        leaver.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        leaver.close()
        gone_at, processed = time.monotonic(), counter.frames
        assert wait_until(lambda: sink.viewers == 1, 5), "the server kept the vanished viewer"
        time.sleep(1.5)
        steady.stop()
        after = counter.frames - processed
    assert steady.error is None, steady.error
    assert steady.frames_between(gone_at, gone_at + 1.5) >= 8  # ~10 fps on, undisturbed
    assert after >= 20  # the 20 fps video kept being classified


def test_emit_never_waits_for_the_server(colour_info) -> None:
    """The inference thread's emit only hands over the newest result: with the server's
    event loop frozen and a viewer connected, every emit still returns."""
    sink = LiveViewSink(ServeOptions(port=0, stream_fps=30), colour_info)
    viewer = MjpegViewer(sink.port)
    try:
        viewer.start()
        assert wait_until(lambda: sink.viewers == 1, 5)
        frozen, thawed = threading.Event(), threading.Event()
        sink._loop.call_soon_threadsafe(lambda: (frozen.set(), thawed.wait(30)))
        assert frozen.wait(5), "the server loop never ran the freezing callback"
        frame = np.zeros((120, 160, 3), np.uint8)
        emitter = threading.Thread(target=lambda: [sink.emit(frame, FrameResult(i, 0.0, ((0, "red", 0.9),), 1.0, 10.0, 0)) for i in range(100)])
        emitter.start()
        emitter.join(20)  # a deadlock guard, not a speed bound
        still_blocked = emitter.is_alive()
        thawed.set()
        assert not still_blocked, "emit waited for the frozen server"
        assert sink._bridge.snapshot().result.index == 99  # the newest result is the one kept
    finally:
        viewer.stop()
        sink.close()


def test_a_stalled_viewer_is_dropped_and_stalls_nothing(colour_info, big_noisy_video) -> None:
    options = ServeOptions(port=0, stream_fps=30, jpeg_quality=95, max_width=640, write_timeout_s=1.0)
    sink = LiveViewSink(options, colour_info)
    counter = Counter()
    with running_pipeline(colour_info, big_noisy_video, [sink, counter]):
        steady = MjpegViewer(sink.port)
        steady.start()
        staller = socket.socket()
        staller.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window, never read
        staller.connect(("127.0.0.1", sink.port))
        staller.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert wait_until(lambda: sink.viewers == 2, 5)
        start, processed = time.monotonic(), counter.frames
        dropped = wait_until(lambda: sink.viewers == 1, 20)
        end = time.monotonic()
        steady.stop()
        staller.close()
        processed = counter.frames - processed
    assert dropped, "the stalled viewer was never dropped"
    assert steady.error is None, steady.error
    assert steady.frames_between(start, end) >= 0.5 * 30 * (end - start) * 0.5, (steady.frames_between(start, end), end - start)
    assert processed >= 0.5 * 30 * (end - start), (processed, end - start)


def test_viewer_limit(colour_info, colour_video) -> None:
    sink = LiveViewSink(ServeOptions(port=0, max_viewers=2), colour_info)
    with running_pipeline(colour_info, colour_video, [sink]):
        viewers = [MjpegViewer(sink.port) for _ in range(2)]
        for viewer in viewers:
            viewer.start()
        assert wait_until(lambda: sink.viewers == 2, 5)
        extra = socket.create_connection(("127.0.0.1", sink.port), timeout=5)
        extra.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert extra.recv(200).startswith(b"HTTP/1.1 503")
        extra.close()
        for viewer in viewers:
            viewer.stop()


def test_close_ends_open_streams(colour_info, colour_video) -> None:
    sink = LiveViewSink(ServeOptions(port=0), colour_info)
    with running_pipeline(colour_info, colour_video, [sink]):
        viewer = MjpegViewer(sink.port)
        viewer.start()
        assert wait_until(lambda: len(viewer.times) >= 2, 10)
        started = time.monotonic()
        sink.close()
        closed_in = time.monotonic() - started
        assert viewer.ended.wait(5) or viewer.error is not None
        viewer.stop()
    assert closed_in < 5, closed_in
