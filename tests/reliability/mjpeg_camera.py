"""A real network camera for fault tests: an HTTP server streaming MJPEG
(multipart/x-mixed-replace, as IP cameras and ESP32-CAMs do) that can be unplugged,
plugged back in, and made to stall. OpenCV reads it through FFmpeg like any IP camera.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time

import cv2
import numpy as np

BOUNDARY = "tledgeframe"


class MjpegCamera:
    """`start()` serves http://127.0.0.1:PORT/stream.mjpg; `unplug()` closes the socket
    and every open stream; `plug()` serves again on the same port; `stall(True)` keeps
    connections open but sends nothing."""

    def __init__(self, fps: float = 20.0, size: tuple[int, int] = (160, 120)) -> None:
        self.fps, self.size = fps, size
        self.port = _free_port()
        self.frames_sent = 0
        self._stalled = threading.Event()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._generation = 0  # bumped on unplug: streams of an old generation end

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def frame_jpeg(self, n: int) -> bytes:
        width, height = self.size
        frame_bgr = np.full((height, width, 3), (n * 7) % 256, np.uint8)
        cv2.putText(frame_bgr, str(n), (10, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 255), 2)
        ok, data = cv2.imencode(".jpg", frame_bgr)
        return data.tobytes()

    def start(self) -> "MjpegCamera":
        self.plug()
        return self

    def plug(self) -> None:
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                generation = camera._generation
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                try:
                    while generation == camera._generation:
                        if camera._stalled.is_set():
                            time.sleep(0.05)
                            continue
                        data = camera.frame_jpeg(camera.frames_sent)
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data + b"\r\n")
                        self.wfile.flush()
                        camera.frames_sent += 1
                        time.sleep(1.0 / camera.fps)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def unplug(self) -> None:
        """The camera vanishes: open streams end, new connections are refused."""
        self._generation += 1
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def stall(self, on: bool) -> None:
        (self._stalled.set if on else self._stalled.clear)()

    def close(self) -> None:
        self.unplug()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
