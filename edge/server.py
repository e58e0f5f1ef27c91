"""Live view in the browser: `tledge run MODEL --serve [HOST:]PORT`.

Endpoints, every one behind the optional token (`?token=` or `Authorization: Bearer`):

    GET /                 the page (edge/static/index.html)
    GET /static/<asset>   only the page's own files, looked up in a fixed list
    GET /stream.mjpg      MJPEG (multipart/x-mixed-replace): frames with the prediction drawn on
    GET /api/latest       the latest `FrameResult.to_dict()` as JSON (503 before the first frame)
    GET /api/events       server-sent events: one `data:` JSON line per new result
    GET /api/model        the model's name, labels and input size

Threads: `emit` (called by the inference loop) only swaps references under a lock, and
copies a frame at most twice per stream period and only while someone watches. The
server runs an asyncio loop in its own thread: a ticker samples the latest state at most
`stream_fps` times per second, draws and encodes one JPEG per sample (on one worker
thread) and shares it with every viewer. Each viewer is its own coroutine that sends the
newest frame when its socket takes it: a slow viewer skips frames, a stalled or vanished
one is dropped, and none of them can reach the inference loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import quote, urlsplit

import cv2
import numpy as np

from edge.bundle import ModelInfo
from edge.errors import MissingExtraError, ServeError
from edge.results import FrameResult
from edge.sinks import draw_overlay

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("tledge.edge")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
BOUNDARY = "tledgeframe"
#: The page's own files: the only names /static/ serves (anything else is a 404).
ASSETS: dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
INDEX = "index.html"
_QUERY_MARK = "{{QUERY}}"  # index.html: where the token query is put into asset URLs
_KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing the stream


@dataclass(frozen=True)
class ServeOptions:
    """How the live view serves. Bounds keep a Pi's CPU and network in check."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port (see `LiveViewSink.port`)
    token: str | None = None  # None: no authentication (fine on 127.0.0.1)
    stream_fps: float = 10.0  # frames/s, the most any viewer receives
    jpeg_quality: int = 70  # OpenCV scale 1..100
    max_width: int = 640  # pixels; wider frames are downscaled before encoding
    max_viewers: int = 16  # open /stream.mjpg + /api/events connections
    write_timeout_s: float = 10.0  # a viewer that takes no data for this long is dropped

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ServeError(f"Port {self.port} is out of range; use 1-65535 (or 0 for any free port)")
        if self.token is not None and not self.token.strip():
            raise ServeError("The token is empty; pass a secret with --token, or leave --token out")
        if not 0.5 <= self.stream_fps <= 30:
            raise ServeError(f"Stream rate {self.stream_fps} fps is out of range; use 0.5-30")
        if not 10 <= self.jpeg_quality <= 95:
            raise ServeError(f"JPEG quality {self.jpeg_quality} is out of range; use 10-95")
        if not 64 <= self.max_width <= 1920:
            raise ServeError(f"Stream width {self.max_width} px is out of range; use 64-1920")
        if self.max_viewers < 1 or self.write_timeout_s <= 0:
            raise ServeError("max_viewers must be >= 1 and write_timeout_s > 0")

    @property
    def all_interfaces(self) -> bool:
        """True when the server listens on every network interface (0.0.0.0 or ::)."""
        return is_all_interfaces(self.host)


def is_loopback(host: str) -> bool:
    """True for localhost and the loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_all_interfaces(host: str) -> bool:
    """True for the unspecified address (0.0.0.0, ::) or an empty host."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False  # a host name


def parse_bind(text: str) -> tuple[str, int]:
    """`[HOST:]PORT` -> (host, port). IPv6 hosts go in brackets: `[::1]:8080`.

    A bare port (or `:PORT`) binds 127.0.0.1: all interfaces are opt-in.
    """
    spec = text.strip()
    if spec.startswith("["):
        host, sep, port_text = spec[1:].partition("]:")
        if not sep:
            raise ServeError(f"--serve {text!r}: write an IPv6 address as [ADDRESS]:PORT, e.g. [::1]:8080")
    elif spec.count(":") > 1:
        raise ServeError(f"--serve {text!r}: put an IPv6 address in brackets, e.g. [::1]:8080")
    else:
        host, _, port_text = spec.rpartition(":")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ServeError(f"--serve {text!r}: expected [HOST:]PORT with a port 1-65535, e.g. 8080 or 0.0.0.0:8080")
    return host or DEFAULT_HOST, int(port_text)


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


def model_summary(info: ModelInfo) -> dict[str, Any]:
    """What /api/model reports: name, labels, input size (None when the model does not say)."""
    inp = info.manifest.get("input", {}) if isinstance(info.manifest, dict) else {}
    size = [inp.get("height"), inp.get("width")] if inp.get("height") and inp.get("width") else None
    return {
        "name": info.name,
        "labels": list(info.labels or ()),
        "input_size": size,  # [height, width], pixels
        "resize": info.resize.value,
        "quantization": info.manifest.get("quantization"),
        "tledge_bundle": info.is_tledge_bundle,
    }


def _load_assets() -> dict[str, bytes]:
    folder = resources.files("edge") / "static"
    try:
        return {name: (folder / name).read_bytes() for name in (INDEX, *ASSETS)}
    except OSError as exc:
        raise ServeError(f"The live view page is missing from the installed package ({exc}); reinstall tledge") from None


def _import_web() -> Any:
    try:
        from aiohttp import web
    except ImportError:
        raise MissingExtraError("serve", "The live view (--serve)") from None
    return web


class _Latest:
    """The newest frame and result, handed from the inference thread to the server."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.result: FrameResult | None = None
        self.result_seq = 0
        self.frame: np.ndarray | None = None
        self.frame_result: FrameResult | None = None
        self.frame_seq = 0
        self.frame_time = float("-inf")  # time.monotonic() of the last copied frame, s

    def snapshot(self) -> tuple[FrameResult | None, int, np.ndarray | None, FrameResult | None, int]:
        with self.lock:
            return self.result, self.result_seq, self.frame, self.frame_result, self.frame_seq


class LiveViewSink:
    """A pipeline sink that serves the live view over HTTP until `close()`.

    >>> with LiveViewSink(ServeOptions(port=8080), info) as sink:
    ...     Pipeline(classifier, source, [sink]).run()
    """

    def __init__(self, options: ServeOptions, model_info: ModelInfo) -> None:
        self.options = options
        self._web = _import_web()
        self._assets = _load_assets()
        self._model = model_summary(model_info)
        self._latest = _Latest()
        self._copy_period = 0.5 / options.stream_fps  # s: copy frames at most 2x the stream rate
        # Published by the ticker, read by viewers (event-loop thread only).
        self._jpeg = b""
        self._jpeg_version = 0
        self._json = ""
        self._json_version = 0
        self._stream_viewers = 0
        self._viewers = 0
        self._closing = False
        self._frames_sent = 0  # JPEG parts written to all viewers (tests, diagnostics)
        self._encoder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tledge-jpeg")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._cond: asyncio.Condition | None = None
        ready: concurrent.futures.Future[tuple[str, int]] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve_thread, args=(ready,), name="tledge-serve", daemon=True)
        self._thread.start()
        try:
            #: The listening (address, port), e.g. ("127.0.0.1", 8080).
            self.address: tuple[str, int] = ready.result(timeout=30)
        except OSError as exc:
            self._encoder.shutdown(wait=False)
            raise ServeError(
                f"Cannot listen on {options.host}:{options.port} ({exc.strerror or exc}); the port may be in use "
                "or the address not on this device: choose another with --serve [HOST:]PORT"
            ) from None

    @classmethod
    def from_cli(cls, serve: str, token: str | None, model_info: ModelInfo, **overrides: Any) -> "LiveViewSink":
        """Build from `--serve [HOST:]PORT` and `--token`; says on stderr where to look.

        Binding to all interfaces (0.0.0.0, ::) prints a warning: anyone on the network
        could watch the camera.
        """
        host, port = parse_bind(serve)
        options = ServeOptions(host=host, port=port, token=token, **overrides)
        if options.all_interfaces:
            guard = "a token is required" if token else "no token protects it: add --token SECRET"
            print(
                f"warning: --serve {serve} listens on all network interfaces; anyone who can reach this "
                f"device can open the live view ({guard}). Bind 127.0.0.1 (the default) to keep it local.",
                file=sys.stderr,
            )
        sink = cls(options, model_info)
        print(f"live view: {sink.url}", file=sys.stderr)
        return sink

    @property
    def port(self) -> int:
        """The listening port (the one chosen by the OS when 0 was asked)."""
        return int(self.address[1])

    @property
    def url(self) -> str:
        """The page's address (with the token, if any)."""
        host = socket.gethostname() if self.options.all_interfaces else self.options.host
        host = f"[{host}]" if ":" in host else host
        query = f"?token={quote(self.options.token, safe='')}" if self.options.token else ""
        return f"http://{host}:{self.port}/{query}"

    @property
    def viewers(self) -> int:
        """Open /stream.mjpg and /api/events connections."""
        return self._viewers

    @property
    def frames_sent(self) -> int:
        """JPEG frames written to viewers so far, all viewers together."""
        return self._frames_sent

    # -- the sink interface (inference thread) ----------------------------------------
    def emit(self, frame_rgb: np.ndarray, result: FrameResult) -> None:
        """Keep `result` (and, while someone watches, a copy of the frame); never blocks on viewers."""
        latest = self._latest
        now = time.monotonic()
        want_frame = self._stream_viewers > 0 and now - latest.frame_time >= self._copy_period
        frame = np.array(frame_rgb, dtype=np.uint8, copy=True) if want_frame else None
        with latest.lock:
            latest.result, latest.result_seq = result, latest.result_seq + 1
            if frame is not None:
                latest.frame, latest.frame_result = frame, result
                latest.frame_seq, latest.frame_time = latest.frame_seq + 1, now

    def close(self) -> None:
        """Stop serving: viewers are disconnected, the port is released."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass  # the loop already ended
        self._thread.join(timeout=10)
        self._encoder.shutdown(wait=False)

    def __enter__(self) -> "LiveViewSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the server thread -------------------------------------------------------------
    def _serve_thread(self, ready: concurrent.futures.Future[tuple[str, int]]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.error("the live view server stopped: %s", exc)
        finally:
            loop.close()

    async def _serve(self, ready: concurrent.futures.Future[tuple[str, int]]) -> None:
        web = self._web
        self._stop = asyncio.Event()
        self._cond = asyncio.Condition()
        app = web.Application(middlewares=[self._auth_middleware()])
        app.on_response_prepare.append(_security_headers)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/stream.mjpg", self._stream)
        app.router.add_get("/api/latest", self._api_latest)
        app.router.add_get("/api/events", self._api_events)
        app.router.add_get("/api/model", self._api_model)
        # No access log: it would print the token of every request.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.options.host, self.options.port).start()
            ready.set_result(tuple(runner.addresses[0][:2]))  # the bound (host, port), also when port 0 was asked
            ticker = asyncio.create_task(self._ticker())
            await self._stop.wait()
            self._closing = True
            async with self._cond:
                self._cond.notify_all()
            ticker.cancel()
        finally:
            await runner.cleanup()

    async def _ticker(self) -> None:
        """Publish the newest result and frame at most `stream_fps` times per second."""
        loop = asyncio.get_running_loop()
        period = 1.0 / self.options.stream_fps  # s
        seen_result = seen_frame = 0
        next_tick = loop.time()
        while True:
            next_tick = max(next_tick + period, loop.time())  # fell behind: no burst
            await asyncio.sleep(next_tick - loop.time())
            try:
                seen_result, seen_frame = await self._publish(seen_result, seen_frame)
            except Exception as exc:  # noqa: BLE001 - an unattended device keeps serving
                log.warning("live view: skipped a frame (%s)", exc)

    async def _publish(self, seen_result: int, seen_frame: int) -> tuple[int, int]:
        """Share the result and frame newer than `seen_*` with the viewers; return the new `seen_*`."""
        result, result_seq, frame, frame_result, frame_seq = self._latest.snapshot()
        changed = False
        if result is not None and result_seq != seen_result:
            self._json = json.dumps(result.to_dict(), ensure_ascii=False)
            self._json_version, seen_result, changed = self._json_version + 1, result_seq, True
        if frame is not None and frame_result is not None and frame_seq != seen_frame and self._stream_viewers:
            seen_frame = frame_seq
            opts = self.options
            loop = asyncio.get_running_loop()
            try:
                self._jpeg = await loop.run_in_executor(self._encoder, encode_frame, frame, frame_result, opts.max_width, opts.jpeg_quality)
                self._jpeg_version, changed = self._jpeg_version + 1, True
            except (cv2.error, ValueError) as exc:  # an odd frame (e.g. not 3 channels): skip it
                log.debug("live view: cannot encode frame %d (%s)", frame_result.index, exc)
        if changed and self._cond is not None:
            async with self._cond:
                self._cond.notify_all()
        return seen_result, seen_frame

    async def _newer(self, version: Callable[[], int], seen: int, timeout: float) -> bool:
        """Wait until `version()` passes `seen`; False on timeout or shutdown."""
        assert self._cond is not None  # set before the server accepts connections
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(lambda: self._closing or version() > seen), timeout)
            except asyncio.TimeoutError:
                return False
        return not self._closing

    # -- handlers ------------------------------------------------------------------------
    def _authorized(self, request: "web.Request") -> bool:
        token = self.options.token
        if token is None:
            return True
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else request.query.get("token", "")
        return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))

    def _auth_middleware(self) -> Any:
        web = self._web

        local_only = is_loopback(self.options.host)

        @web.middleware
        async def auth(request: "web.Request", handler: Any) -> "web.StreamResponse":
            # Bound to loopback, answer only to loopback names: a web page whose DNS name is
            # re-pointed to 127.0.0.1 (DNS rebinding) must not read the camera.
            if local_only and not is_loopback(urlsplit(f"//{request.host}").hostname or ""):
                return web.json_response(
                    {"error": "this live view answers only to localhost / 127.0.0.1; to reach it by another name, bind that address with --serve HOST:PORT"},
                    status=403,
                )
            if not self._authorized(request):
                return web.json_response(
                    {"error": "missing or wrong token: open the URL printed by tledge run (…/?token=…) or send 'Authorization: Bearer TOKEN'"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="tledge"'},
                )
            return await handler(request)

        return auth

    async def _index(self, request: "web.Request") -> "web.Response":
        token = self.options.token
        query = f"?token={quote(token, safe='')}" if token else ""  # quote() leaves nothing HTML-special
        page = self._assets[INDEX].decode("utf-8").replace(_QUERY_MARK, query)
        return self._web.Response(text=page, content_type="text/html", charset="utf-8")

    async def _static(self, request: "web.Request") -> "web.Response":
        name = request.match_info.get("name", "")
        if name not in ASSETS:  # a fixed list: no path is ever built from the request
            raise self._web.HTTPNotFound()
        return self._web.Response(body=self._assets[name], headers={"Content-Type": ASSETS[name]})

    async def _api_model(self, request: "web.Request") -> "web.Response":
        return self._web.json_response(self._model)

    async def _api_latest(self, request: "web.Request") -> "web.Response":
        result = self._latest.snapshot()[0]
        if result is None:
            return self._web.json_response({"error": "no frame processed yet; retry shortly"}, status=503, headers={"Retry-After": "1"})
        return self._web.json_response(result.to_dict(), dumps=lambda obj: json.dumps(obj, ensure_ascii=False))

    def _admit(self) -> None:
        if self._viewers >= self.options.max_viewers:
            raise self._web.HTTPServiceUnavailable(text=f"too many viewers (limit {self.options.max_viewers}); close another tab")

    async def _stream(self, request: "web.Request") -> "web.StreamResponse":
        """MJPEG: the newest frame each time it changes and the viewer is ready."""
        self._admit()
        response = self._web.StreamResponse(headers={"Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}"})
        self._viewers += 1
        self._stream_viewers += 1
        try:
            await response.prepare(request)
            seen = 0
            while not self._closing:
                if not await self._newer(lambda: self._jpeg_version, seen, _KEEPALIVE_S):
                    if _gone(request):
                        break
                    continue
                seen, jpeg = self._jpeg_version, self._jpeg
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode("ascii")
                await asyncio.wait_for(response.write(head + jpeg + b"\r\n"), self.options.write_timeout_s)
                self._frames_sent += 1
        except (ConnectionError, asyncio.TimeoutError):
            pass  # the viewer left or stalled: drop it, the others go on
        finally:
            self._viewers -= 1
            self._stream_viewers -= 1
        return response

    async def _api_events(self, request: "web.Request") -> "web.StreamResponse":
        """Server-sent events: each new result (at most `stream_fps` per second)."""
        self._admit()
        response = self._web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
        self._viewers += 1
        try:
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")
            seen = 0
            while not self._closing:
                if await self._newer(lambda: self._json_version, seen, _KEEPALIVE_S):
                    seen, text = self._json_version, self._json
                    message = f"data: {text}\n\n".encode("utf-8")
                elif self._closing:
                    break
                else:
                    message = b": keepalive\n\n"
                await asyncio.wait_for(response.write(message), self.options.write_timeout_s)
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            self._viewers -= 1
        return response


def _gone(request: "web.Request") -> bool:
    """True once the viewer's connection is closed (seen without writing to it)."""
    return request.transport is None or request.transport.is_closing()


async def _security_headers(request: "web.Request", response: "web.StreamResponse") -> None:
    """No caching of live data, no sniffing, no token leaking through Referer, no foreign scripts."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
