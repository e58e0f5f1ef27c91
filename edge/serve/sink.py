"""`LiveViewSink`: the pipeline sink that runs the live view's server in its own thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import ModelInfo, load_model_info
from edge.errors import ServeError
from edge.results import FrameResult
from edge.serve.app import LiveApp, import_web, load_assets, model_summary, wrap_request_factory
from edge.serve.bridge import FrameBridge
from edge.serve.connections import ConnectionGuard, OneLineLog
from edge.serve import stream
from edge.serve.options import ServeOptions, display_host, is_loopback, new_token, parse_bind

log = logging.getLogger("tledge.edge")


def tls_context(options: ServeOptions) -> ssl.SSLContext | None:
    """The server's TLS context from `tls_cert`/`tls_key`, or None for plain http."""
    if options.tls_cert is None or options.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(options.tls_cert), str(options.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise ServeError(
            f"Cannot use --tls-cert {options.tls_cert} / --tls-key {options.tls_key} ({exc}); "
            "give a PEM certificate and its matching unencrypted PEM key"
        ) from None
    return context


class LiveViewSink:
    """A pipeline sink that serves the live view over HTTP(S) until `close()`.

    >>> with LiveViewSink(ServeOptions(port=8080), info) as sink:
    ...     Pipeline(classifier, source, [sink]).run()
    """

    def __init__(self, options: ServeOptions, model_info: ModelInfo, labelling: Any = None) -> None:
        """`labelling`: a `serve.labelling.LabelDesk` to add the labelling panel (`run --label-into`)."""
        self.options = options
        self._labelling = labelling
        self._web = import_web()
        self._assets = load_assets()
        self._model = model_summary(model_info)
        self._ssl = tls_context(options)
        self._bridge = FrameBridge(copy_period_s=0.5 / options.stream_fps)  # copy frames at most 2x the stream rate
        self._guard = ConnectionGuard(options.max_connections, options.header_timeout_s)
        self._encoder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tledge-jpeg")
        self._app: LiveApp | None = None
        self._handler_factory: Any = None  # aiohttp's protocol factory, once the app is set up
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
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
    def from_cli(cls, serve: str, token: str | None, model_info: ModelInfo, labelling: Any = None, **overrides: Any) -> "LiveViewSink":
        """Build from `--serve [HOST:]PORT` and `--token`; says once on stderr where to look.

        Off loopback without a token, a random one is generated and the full URL with it
        is printed (the only place it appears). A token given by the user is never printed.
        """
        host, port = parse_bind(serve)
        network = overrides.get("network")
        generated = token is None and (network if network is not None else not is_loopback(host))
        options = ServeOptions(host=host, port=port, token=new_token() if generated else token, **overrides)
        sink = cls(options, model_info, labelling)
        if options.off_loopback:
            print(f"note: the live view is open to the network at {sink.url} (token required)"
                  + ("" if options.tls else "; without --tls-cert it travels unencrypted"), file=sys.stderr)
        if generated:
            print(f"live view: {sink.url}?token={options.token}", file=sys.stderr)
        elif options.token:
            print(f"live view: {sink.url} (open it once as {sink.url}?token=YOUR_TOKEN; scripts send 'Authorization: Bearer YOUR_TOKEN')", file=sys.stderr)
        else:
            print(f"live view: {sink.url}", file=sys.stderr)
        return sink

    @property
    def port(self) -> int:
        """The listening port (the one chosen by the OS when 0 was asked)."""
        return int(self.address[1])

    @property
    def url(self) -> str:
        """The page's address, without any token."""
        return f"{self.options.scheme}://{display_host(self.options)}:{self.port}/"

    @property
    def viewers(self) -> int:
        """Open /stream.mjpg and /api/events connections."""
        return self._app.slots.open if self._app else 0

    @property
    def connections(self) -> int:
        """Open TCP connections."""
        return self._guard.open

    @property
    def frames_sent(self) -> int:
        """JPEG frames written to viewers so far, all viewers together."""
        return self._app.broadcast.frames_sent if self._app else 0

    # -- the sink interface (inference thread) ----------------------------------------
    def emit(self, frame_rgb: np.ndarray, result: FrameResult) -> None:
        """Keep `result` (and, while someone watches the video, a copy of the frame); never waits on viewers."""
        app = self._app
        self._bridge.put(frame_rgb, result, watching=app is not None and app.slots.streams > 0)

    def on_event(self, event: dict[str, Any]) -> None:
        """Pipeline events (inference thread): a hot update (`run --watch`) changes what
        /api/model reports, so the page shows the new model, or why an update was refused.
        The new bundle's summary is read on the server thread, never in the camera loop."""
        if event.get("event") != "model_update":
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._apply_update(dict(event)), loop)
        except RuntimeError:
            pass  # the server is stopping

    async def _apply_update(self, event: dict[str, Any]) -> None:
        update = model_update_summary(event)
        if event.get("status") == "swapped" and event.get("bundle"):
            try:
                # the watcher verified this bundle's checksums before swapping: read, do not hash again
                read = functools.partial(load_model_info, event["bundle"], verify_sha256=False)
                info = await asyncio.get_running_loop().run_in_executor(None, read)
                self._model = model_summary(info)
            except Exception as exc:  # noqa: BLE001 - the stream goes on with the old summary
                log.warning("live view: cannot read the new model's summary (%s)", exc)
        if self._app is not None:
            self._app.model, self._app.update = self._model, update

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
                log.error("live view: the server stopped: %s", exc)
        finally:
            loop.close()

    async def _serve(self, ready: concurrent.futures.Future[tuple[str, int]]) -> None:
        web, opts = self._web, self.options
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # The socket first: the cookie's name needs the port the OS picked.
        server = await loop.create_server(lambda: self._guard_factory(), opts.host, opts.port, ssl=self._ssl,
                                          reuse_address=True, backlog=128)
        try:
            port = server.sockets[0].getsockname()[1]
            app = LiveApp(opts, port, self._model, self._assets, self._bridge, self._guard, self._web, self._labelling)
            # No access log (one line per request is noise on a device); bad requests log one line each.
            runner = web.AppRunner(app.build(), access_log=None, handle_signals=False, shutdown_timeout=2.0,
                                   logger=OneLineLog(opts.token), keepalive_timeout=opts.header_timeout_s + 5)
            await runner.setup()
            wrap_request_factory(runner.server)
            self._handler_factory = runner.server
            self._app = app
            ticker = asyncio.create_task(stream.Ticker(self._bridge, app.broadcast, app.slots, opts, self._encoder).run())
            ready.set_result(tuple(server.sockets[0].getsockname()[:2]))
            await self._stop.wait()
            await app.broadcast.close()
            ticker.cancel()
            server.close()
            await runner.cleanup()
        finally:
            server.close()

    def _guard_factory(self) -> Any:
        if self._handler_factory is None:  # a connection before set-up finished: refuse it
            return _Refuse()
        return self._guard.factory(self._handler_factory)()


def model_update_summary(event: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a `model_update` event: status, model, the bundle's folder
    name (not the device's path), the error of a refused bundle, and when (UTC)."""
    bundle = event.get("bundle")
    error = event.get("error")
    if bundle and error:  # paths in the message start at the bundle's folder
        error = str(error).replace(str(Path(str(bundle)).parent) + "/", "")
    return {
        "status": event.get("status"),
        "model": event.get("model"),
        "bundle": Path(str(bundle)).name if bundle else None,
        "error": error,
        "schema_changed": bool(event.get("schema_changed")),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()

