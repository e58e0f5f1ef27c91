"""The aiohttp application: the guard middleware, the route table and the handlers.

Endpoints (each behind the guard: Host allow-list, Sec-Fetch-Site, failure limit, token):

    GET /                 the page (static/index.html)
    GET /static/<asset>   only the page's own files, looked up in a fixed list
    GET /stream.mjpg      MJPEG (multipart/x-mixed-replace): frames with the prediction drawn on
    GET /api/latest       the latest `FrameResult.to_dict()` as JSON (503 before the first frame)
    GET /api/events       server-sent events: one `data:` JSON line per published frame
    GET /api/model        the model's name, labels and input size; `update`: the last hot update

The token is accepted as `Authorization: Bearer TOKEN` (scripts) or as the session
cookie. A request carrying `?token=` gets the cookie and a redirect to the same URL
without it, so the token leaves the address bar and the page never holds it.
    GET/POST /api/uncertain...  the labelling panel, with `run --label-into` (serve/labelling.py)

To add endpoints, append `Route`s to `LiveApp.routes()`. A route that changes state
(POST) must also pass `auth.state_change_refusal` (the CSRF guard), which the guard
applies to every method but GET.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from edge.bundle import ModelInfo
from edge.errors import MissingExtraError, ServeError
from edge.serve import auth, stream
from edge.serve.bridge import FrameBridge
from edge.serve.connections import ConnectionGuard, redact
from edge.serve.options import ServeOptions, allowed_host_names

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("tledge.edge")

#: The page's own files: the only names /static/ serves (anything else is a 404).
ASSETS: dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
INDEX = "index.html"
SERVER_NAME = "tledge"  # the Server header: no versions to fingerprint
#: On every response, errors included.
BASE_HEADERS = {
    "Cross-Origin-Resource-Policy": "same-origin",  # no other site may embed /stream.mjpg or read the API
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",  # live data and the page: never cached
    "Referrer-Policy": "no-referrer",
}
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


@dataclass(frozen=True)
class Route:
    """One endpoint of the live view."""

    path: str
    handler: Handler
    method: str = "GET"


def import_web() -> Any:
    """aiohttp.web, or MissingExtraError naming the extra."""
    try:
        from aiohttp import web
    except ImportError:
        raise MissingExtraError("serve", "The live view (--serve)") from None
    return web


def load_assets() -> dict[str, bytes]:
    folder = resources.files("edge.serve") / "static"
    try:
        return {name: (folder / name).read_bytes() for name in (INDEX, *ASSETS)}
    except OSError as exc:
        raise ServeError(f"The live view page is missing from the installed package ({exc}); reinstall tledge") from None


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


@dataclass
class LiveApp:
    """Everything the handlers share; lives on the server thread's event loop."""

    options: ServeOptions
    port: int  # the bound port (names the cookie)
    model: dict[str, Any]
    assets: dict[str, bytes]
    bridge: FrameBridge
    guard: ConnectionGuard
    web: Any = field(default_factory=import_web)
    labelling: Any = None  # a serve.labelling.LabelDesk: the labelling panel's endpoints
    update: dict[str, Any] | None = None  # the last hot update (`run --watch`): swapped or rejected, shown by the page

    def __post_init__(self) -> None:
        opts = self.options
        self.broadcast = stream.Broadcast()
        self.slots = stream.ViewerSlots(opts.max_viewers, opts.max_viewers_per_client)
        self.limiter = auth.FailureLimiter(opts.auth_failures_per_minute, 60.0)
        self.host_names = allowed_host_names(opts)
        self.cookie = auth.cookie_name(self.port)
        self._limited_logged: set[str] = set()  # clients whose 429s were logged this window

    # -- the application -------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [
            Route("/", self.index),
            Route("/static/{name}", self.static),
            Route("/stream.mjpg", self.stream_mjpeg),
            Route("/api/latest", self.api_latest),
            Route("/api/events", self.api_events),
            Route("/api/model", self.api_model),
            *self._labelling_routes(),
        ]

    def _labelling_routes(self) -> list[Route]:
        if self.labelling is None:
            return []
        from edge.serve.labelling import LabelRoutes

        return [Route(path, handler, method) for method, path, handler in LabelRoutes(self.labelling, self.web).routes()]

    def build(self) -> "web.Application":
        app = self.web.Application(middlewares=[self.middleware()])
        app.on_response_prepare.append(self._page_headers)
        for route in self.routes():
            if route.method == "GET":
                app.router.add_get(route.path, route.handler, allow_head=False)
            else:
                app.router.add_route(route.method, route.path, route.handler)
        return app

    # -- the guard -------------------------------------------------------------------
    def _refuse(self, request: "web.Request", status: int, message: str, reason: str, headers: dict[str, str] | None = None,
                log_it: bool = True) -> "web.Response":
        if log_it:
            log.warning("%s", redact(f"live view: {status} for {request.remote} {request.method} {request.path} ({reason})", self.options.token))
        return self.web.json_response({"error": message}, status=status, headers=headers)

    def _check(self, request: "web.Request") -> "web.StreamResponse | None":
        """None when `request` may go on; else the refusal to send."""
        opts, client = self.options, request.remote or "?"
        if not auth.host_allowed(request.headers.get("Host", ""), opts.off_loopback, self.host_names):
            where = "localhost / 127.0.0.1" if not opts.off_loopback else "this device's address or name (add others with --allow-host)"
            return self._refuse(request, 403, f"this live view answers only to {where}", "Host not allowed")
        if not auth.fetch_site_allowed(request.headers.get("Sec-Fetch-Site")):
            return self._refuse(request, 403, "requests from other sites are refused; open the live view directly", "cross-site request")
        if request.method != "GET":
            reason = auth.state_change_refusal(request.headers, "https" if opts.tls else "http")
            if reason is not None:
                return self._refuse(request, 403, f"refused: {reason} (the live view's own page sends it)", "state change without CSRF proof")
        if opts.token is None:
            return None
        wait = self.limiter.retry_after(client)
        if wait > 0:
            first = client not in self._limited_logged
            self._limited_logged.add(client)
            return self._refuse(request, 429, "too many failed attempts; wait a minute", "rate limited, further refusals not logged",
                                headers={"Retry-After": str(int(wait) + 1)}, log_it=first)
        self._limited_logged.discard(client)
        query_token = request.query.get("token") if "token" in request.query else None
        header = request.headers.get("Authorization")
        given = auth.bearer(header) if header is not None else query_token if query_token is not None else request.cookies.get(self.cookie)
        if auth.token_matches(given, opts.token):
            if query_token is not None and header is None:
                return self._to_clean_url(request)
            return None
        if given is not None:  # a wrong guess counts; no credential at all (a fresh browser) does not
            self.limiter.failed(client)
        return self._refuse(
            request, 401,
            "missing or wrong token: open the URL tledge printed (…/?token=…) once, or send 'Authorization: Bearer TOKEN'",
            "missing or wrong token", headers={"WWW-Authenticate": 'Bearer realm="tledge"'},
        )

    def _to_clean_url(self, request: "web.Request") -> "web.StreamResponse":
        """Trade `?token=` for an HttpOnly, SameSite=Strict cookie and send the browser to the URL without it."""
        query = request.rel_url.query.copy()
        query.popall("token", None)
        clean = request.rel_url.with_query(query) if query else request.rel_url.with_query(None)
        response = self.web.Response(status=303, headers={"Location": str(clean)})
        response.set_cookie(self.cookie, self.options.token, httponly=True, samesite="Strict", secure=self.options.tls, path="/")
        return response

    def middleware(self) -> Any:
        web, guard = self.web, self.guard

        @web.middleware
        async def guarded(request: "web.Request", handler: Handler) -> "web.StreamResponse":
            guard.request_started(request.protocol)
            try:
                refusal = self._check(request)
                if refusal is not None:
                    return refusal
                return await handler(request)
            except web.HTTPException:
                raise
            except (ConnectionError, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 - one line, never a traceback or a 500 page with details
                log.warning("%s", redact(f"live view: 500 for {request.remote} {request.method} {request.path} ({type(exc).__name__}: {exc})", self.options.token))
                return web.json_response({"error": "internal error; see the device's log"}, status=500)
            finally:
                guard.request_finished(request.protocol)

        return guarded

    @staticmethod
    async def _page_headers(request: "web.Request", response: "web.StreamResponse") -> None:
        response.headers["Content-Security-Policy"] = CSP

    # -- handlers --------------------------------------------------------------------
    async def index(self, request: "web.Request") -> "web.Response":
        return self.web.Response(body=self.assets[INDEX], content_type="text/html", charset="utf-8")

    async def static(self, request: "web.Request") -> "web.Response":
        name = request.match_info.get("name", "")
        if name not in ASSETS:  # a fixed list: no path is ever built from the request
            raise self.web.HTTPNotFound()
        return self.web.Response(body=self.assets[name], headers={"Content-Type": ASSETS[name]})

    async def api_model(self, request: "web.Request") -> "web.Response":
        return self.web.json_response({**self.model, "update": self.update})

    async def api_latest(self, request: "web.Request") -> "web.Response":
        result = self.bridge.snapshot().result
        if result is None:
            return self.web.json_response({"error": "no frame processed yet; retry shortly"}, status=503, headers={"Retry-After": "1"})
        return self.web.json_response(result.to_dict(), dumps=lambda obj: json.dumps(obj, ensure_ascii=False))

    async def _viewer(self, request: "web.Request", content_type: str, is_stream: bool,
                      body: Callable[["web.StreamResponse"], Awaitable[None]]) -> "web.StreamResponse":
        client = request.remote or "?"
        refusal = self.slots.refusal(client)
        if refusal is not None:
            return self._refuse(request, 503, refusal, "viewer limit", headers={"Retry-After": "5"})
        response = self.web.StreamResponse(headers={"Content-Type": content_type, "X-Accel-Buffering": "no"})
        self.slots.take(client, is_stream)
        try:
            await response.prepare(request)
            await body(response)
        except (ConnectionError, asyncio.TimeoutError):
            pass  # the viewer left or stopped reading: drop it, the others go on
        finally:
            self.slots.give_back(client, is_stream)
        return response

    async def stream_mjpeg(self, request: "web.Request") -> "web.StreamResponse":
        """MJPEG: the newest frame each time it changes and the viewer is ready."""
        write_timeout = self.options.write_timeout_s
        return await self._viewer(request, f"multipart/x-mixed-replace; boundary={stream.BOUNDARY}", True,
                                  lambda response: stream.mjpeg(request, response, self.broadcast, write_timeout))

    async def api_events(self, request: "web.Request") -> "web.StreamResponse":
        """Server-sent events: the result of each published frame (at most `stream_fps` per second)."""
        write_timeout = self.options.write_timeout_s
        return await self._viewer(request, "text/event-stream", False,
                                  lambda response: stream.events(response, self.broadcast, write_timeout))


def wrap_request_factory(server: Any) -> None:
    """Give every response, including aiohttp's own 400s for unparseable requests, the base headers.

    aiohttp skips `on_response_prepare` for requests it could not route, so the headers go
    on at the writer, the one place every response passes.
    """
    make_request = server.request_factory

    def factory(*args: Any, **kwargs: Any) -> Any:
        request = make_request(*args, **kwargs)
        writer = request.writer
        write_headers = writer.write_headers

        async def with_base_headers(status_line: str, headers: Any) -> None:
            headers["Server"] = SERVER_NAME
            for key, value in BASE_HEADERS.items():
                headers.setdefault(key, value)
            await write_headers(status_line, headers)

        writer.write_headers = with_base_headers
        return request

    server.request_factory = factory
