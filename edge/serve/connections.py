"""Bounds on raw connections, below HTTP: an open-connection cap and a header-read timeout.

aiohttp's own protocol object does the HTTP; `GuardedProtocol` sits between it and the
socket. A connection beyond `max_connections` is closed at once. A connection that has
no request in progress must send a complete request head within `header_timeout_s` of
opening (or of its previous response), so clients that trickle header lines or say
nothing cannot hold sockets open.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Callable

log = logging.getLogger("tledge.edge")

_TOKEN_QUERY = re.compile(r"(token=)[^&\s'\"]*", re.IGNORECASE)


def redact(text: str, token: str | None) -> str:
    """`text` with the token (and any `token=` query value) replaced: log lines never carry a secret."""
    if token:
        text = text.replace(token, "[token]")
    return _TOKEN_QUERY.sub(r"\1[token]", text)


class ConnectionGuard:
    """Counts open connections and tracks which have a request in progress (event-loop thread only)."""

    def __init__(self, max_connections: int, header_timeout_s: float) -> None:
        self.max_connections, self.header_timeout_s = max_connections, header_timeout_s
        self.open = 0
        self.refused = 0  # connections closed because of the cap
        self.timed_out = 0  # connections closed because no complete request came in time
        self._by_handler: dict[Any, GuardedProtocol] = {}

    def factory(self, make_handler: Callable[[], Any]) -> Callable[[], "GuardedProtocol"]:
        """A protocol factory for `loop.create_server` wrapping aiohttp's `make_handler`."""
        return lambda: GuardedProtocol(self, make_handler())

    def request_started(self, handler: Any) -> None:
        proto = self._by_handler.get(handler)
        if proto is not None:
            proto.busy += 1

    def request_finished(self, handler: Any) -> None:
        proto = self._by_handler.get(handler)
        if proto is not None:
            proto.busy -= 1
            proto.arm()


class GuardedProtocol(asyncio.Protocol):
    """Forwards to aiohttp's protocol; closes connections over the cap or too slow to send a request."""

    def __init__(self, guard: ConnectionGuard, inner: Any) -> None:
        self.guard, self.inner = guard, inner
        self.busy = 0  # requests in progress on this connection
        self.counted = False
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else "?"
        if self.guard.open >= self.guard.max_connections:
            self.guard.refused += 1
            log.warning("live view: refused a connection from %s (limit of %d open connections)", self._peer, self.guard.max_connections)
            transport.abort()
            return
        self.counted = True
        self.guard.open += 1
        self.guard._by_handler[self.inner] = self
        self.inner.connection_made(transport)
        self.arm()

    def arm(self) -> None:
        """Start the clock for the next complete request head."""
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.guard.header_timeout_s, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self.busy or self.transport is None or self.transport.is_closing():
            return
        self.guard.timed_out += 1
        log.warning("live view: closed a connection from %s that sent no complete request in %g s", self._peer, self.guard.header_timeout_s)
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.counted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.counted else None

    def pause_writing(self) -> None:
        if self.counted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.counted:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.counted:
            return
        self.counted = False
        self.guard.open -= 1
        self.guard._by_handler.pop(self.inner, None)
        self.inner.connection_lost(exc)


class OneLineLog:
    """Stands in for aiohttp's server logger: one redacted line per bad request, never a traceback."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    def exception(self, msg: str, *args: Any, exc_info: BaseException | None = None, **_: Any) -> None:
        where = (msg % args) if args else msg
        what = f"{type(exc_info).__name__}: {exc_info}" if isinstance(exc_info, BaseException) else "error"
        line = f"live view: {where.replace('Error handling request', 'bad request')} ({what})".replace("\n", " ")
        log.warning("%s", redact(line, self.token)[:300])

    error = exception

    def debug(self, msg: str, *args: Any, exc_info: BaseException | None = None, **kwargs: Any) -> None:
        if isinstance(exc_info, BaseException):  # aiohttp files non-HTTP bytes on a fresh connection here
            self.exception(msg, *args, exc_info=exc_info)
        # other debug notes (e.g. a client that left early) are not ours to print

    info = warning = debug

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging.Logger's name
        return level >= logging.WARNING
