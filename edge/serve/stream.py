"""Live data to viewers: one JPEG and one JSON per tick, shared by every MJPEG and SSE viewer.

A ticker samples the bridge at most `stream_fps` times per second, encodes one JPEG (on
one worker thread) and publishes it with the JSON of *the same frame*, so the panel and
the picture always describe one frame. Each viewer is its own coroutine that sends the
newest publication when its socket takes it: a slow viewer skips frames, one that stops
reading for `write_timeout_s` is dropped, and none of them can reach the inference thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np

from edge.results import FrameResult
from edge.serve.bridge import FrameBridge
from edge.serve.options import ServeOptions
from edge.sinks import draw_overlay

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("tledge.edge")

BOUNDARY = "tledgeframe"
KEEPALIVE_S = 15.0  # an SSE comment / wake-up this often notices closed viewers and keeps proxies open


def encode_frame(frame_rgb: np.ndarray, result: FrameResult, max_width: int, quality: int) -> bytes:
    """Downscale to `max_width`, draw the prediction on it, return JPEG bytes (pure)."""
    height, width = frame_rgb.shape[:2]
    if width > max_width:
        size = (max_width, max(1, round(height * max_width / width)))
        frame_rgb = cv2.resize(frame_rgb, size, interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".jpg", draw_overlay(frame_rgb, result), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    return buffer.tobytes()


def result_json(result: FrameResult) -> str:
    return json.dumps(result.to_dict(), ensure_ascii=False)


class ViewerSlots:
    """Open viewer connections, capped in all and per client address (event-loop thread only)."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self.open = 0
        self.streams = 0  # MJPEG viewers: only they need frames copied and encoded
        self._by_client: dict[str, int] = {}

    def refusal(self, client: str) -> str | None:
        """Why `client` may not open another viewer now, or None."""
        if self.open >= self.total:
            return f"too many viewers (limit {self.total}); close another tab"
        if self._by_client.get(client, 0) >= self.per_client:
            return f"too many viewers from your address (limit {self.per_client}); close another tab"
        return None

    def take(self, client: str, stream: bool) -> None:
        self.open += 1
        self.streams += stream
        self._by_client[client] = self._by_client.get(client, 0) + 1

    def give_back(self, client: str, stream: bool) -> None:
        self.open -= 1
        self.streams -= stream
        left = self._by_client.get(client, 1) - 1
        if left:
            self._by_client[client] = left
        else:
            self._by_client.pop(client, None)


class Broadcast:
    """The newest publication (JPEG + JSON) and a condition viewers wait on (event-loop thread only)."""

    def __init__(self) -> None:
        self.jpeg = b""
        self.jpeg_index = -1  # frame index of `jpeg`
        self.jpeg_version = 0
        self.json = ""
        self.json_version = 0
        self.closing = False
        self.frames_sent = 0  # JPEG parts written to all viewers (tests, diagnostics)
        self.cond = asyncio.Condition()

    async def notify(self) -> None:
        async with self.cond:
            self.cond.notify_all()

    async def close(self) -> None:
        self.closing = True
        await self.notify()

    async def newer(self, version: Callable[[], int], seen: int, timeout: float) -> bool:
        """Wait until `version()` passes `seen`; False on timeout or shutdown."""
        async with self.cond:
            try:
                await asyncio.wait_for(self.cond.wait_for(lambda: self.closing or version() > seen), timeout)
            except asyncio.TimeoutError:
                return False
        return not self.closing


class Ticker:
    """Publishes what the bridge holds at most `stream_fps` times per second."""

    def __init__(self, bridge: FrameBridge, broadcast: Broadcast, slots: ViewerSlots, options: ServeOptions,
                 encoder: concurrent.futures.Executor) -> None:
        self.bridge, self.broadcast, self.slots, self.options, self.encoder = bridge, broadcast, slots, options, encoder
        self._seen_result = self._seen_frame = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.options.stream_fps  # s
        next_tick = loop.time()
        while True:
            next_tick = max(next_tick + period, loop.time())  # fell behind: no burst
            await asyncio.sleep(next_tick - loop.time())
            try:
                await self.publish()
            except Exception as exc:  # noqa: BLE001 - an unattended device keeps serving
                log.warning("live view: skipped a frame (%s)", exc)

    async def publish(self) -> None:
        """Share the newest frame and/or result; while the video is watched, the JSON is the frame's own."""
        snap, out = self.bridge.snapshot(), self.broadcast
        changed = False
        if self.slots.streams and snap.frame_rgb is not None and snap.frame_result is not None and snap.frame_seq != self._seen_frame:
            self._seen_frame = snap.frame_seq
            opts = self.options
            try:
                jpeg = await asyncio.get_running_loop().run_in_executor(
                    self.encoder, encode_frame, snap.frame_rgb, snap.frame_result, opts.max_width, opts.jpeg_quality
                )
            except (cv2.error, ValueError) as exc:  # an odd frame (e.g. not 3 channels): skip it
                log.debug("live view: cannot encode frame %d (%s)", snap.frame_result.index, exc)
            else:
                out.jpeg, out.jpeg_index, out.jpeg_version = jpeg, snap.frame_result.index, out.jpeg_version + 1
                out.json, out.json_version = result_json(snap.frame_result), out.json_version + 1
                self._seen_result, changed = snap.result_seq, True
        if not changed and not self.slots.streams and snap.result is not None and snap.result_seq != self._seen_result:
            out.json, out.json_version = result_json(snap.result), out.json_version + 1
            self._seen_result, changed = snap.result_seq, True
        if changed:
            await out.notify()


def gone(request: "web.Request") -> bool:
    """True once the viewer's connection is closed (seen without writing to it)."""
    return request.transport is None or request.transport.is_closing()


async def mjpeg(request: "web.Request", response: "web.StreamResponse", broadcast: Broadcast, write_timeout_s: float) -> None:
    """Write the newest JPEG each time it changes and the viewer is ready, until it leaves or stalls."""
    seen = 0
    while not broadcast.closing:
        if not await broadcast.newer(lambda: broadcast.jpeg_version, seen, KEEPALIVE_S):
            if gone(request):
                return
            continue
        seen, jpeg, index = broadcast.jpeg_version, broadcast.jpeg, broadcast.jpeg_index
        head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                f"X-Frame-Index: {index}\r\n\r\n").encode("ascii")
        await asyncio.wait_for(response.write(head + jpeg + b"\r\n"), write_timeout_s)
        broadcast.frames_sent += 1


async def events(response: "web.StreamResponse", broadcast: Broadcast, write_timeout_s: float) -> None:
    """Server-sent events: one `data:` JSON line per publication, a comment when idle."""
    await asyncio.wait_for(response.write(b"retry: 2000\n\n"), write_timeout_s)
    seen = 0
    while not broadcast.closing:
        if await broadcast.newer(lambda: broadcast.json_version, seen, KEEPALIVE_S):
            seen, text = broadcast.json_version, broadcast.json
            message = f"data: {text}\n\n".encode("utf-8")
        elif broadcast.closing:
            return
        else:
            message = b": keepalive\n\n"
        await asyncio.wait_for(response.write(message), write_timeout_s)
