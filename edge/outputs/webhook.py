"""Events to a webhook: one JSON POST per event, retried with backoff, signed with HMAC.

    POST URL   body: the event (JSON)   Content-Type: application/json
               X-Tledge-Event: start|end, X-Tledge-Event-Id: <id>
               X-Tledge-Signature: sha256=<hex HMAC-SHA256 of the body>   (with a secret)

A 2xx answer delivers the event. Connection errors, timeouts, 408, 429 and 5xx are
retried (same event, exponential backoff, order kept). Any other 4xx is the receiver
saying no for good: the event is dropped, counted as rejected and logged. A redirect is
an answer, never followed (it would turn the POST into a GET and lose the event).

One HTTP/1.1 connection (standard library `http.client`, in the worker thread: no extra
dependency on the device) is kept open between posts, so an event costs one request,
not a TCP (and TLS) handshake each. A kept connection the receiver closed while idle is
reopened and the post sent again at once; any other failure closes it, and the next
attempt (after the backoff) opens a fresh one. When an HTTP(S) proxy applies to the URL
(the `http_proxy` / `https_proxy` / `no_proxy` variables), posts go through urllib
instead, one connection each, as before.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from edge.errors import OutputUsageError
from edge.outputs.queue import DiskQueue
from edge.outputs.worker import Backoff, Outcome, QueuedOutput

log = logging.getLogger("tledge.edge")

SECRET_ENV = "TLEDGE_WEBHOOK_SECRET"
SIGNATURE_HEADER = "X-Tledge-Signature"
_RETRY_STATUSES = (408, 425, 429)


@dataclass(frozen=True)
class WebhookOptions:
    url: str
    secret: str | None = None
    timeout_s: float = 5.0  # per request

    def __post_init__(self) -> None:
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise OutputUsageError(f"--webhook {self.url!r}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OutputUsageError(f"--webhook {self.url!r}: expected an http:// or https:// URL")
        if self.timeout_s <= 0:
            raise OutputUsageError("--webhook-timeout must be > 0 seconds")


def sign(secret: str, body: bytes) -> str:
    """The X-Tledge-Signature value: "sha256=" + hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would turn the POST into a GET and lose the event: treat it as an answer."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _uses_proxy(url: str) -> bool:
    """True when urllib would send `url` through a proxy (environment variables)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    return parts.scheme in proxies and not urllib.request.proxy_bypass(parts.netloc)


class WebhookOutput(QueuedOutput):
    name = "webhook"

    def __init__(self, options: WebhookOptions, queue: DiskQueue, backoff: Backoff = Backoff()) -> None:
        super().__init__(queue, backoff)
        self.options = options
        self._parts = urlsplit(options.url)
        self._path = (self._parts.path or "/") + (f"?{self._parts.query}" if self._parts.query else "")
        self._via_proxy = _uses_proxy(options.url)
        self._opener = urllib.request.build_opener(_NoRedirect) if self._via_proxy else None
        self._conn: http.client.HTTPConnection | None = None
        self.connections = 0  # TCP connections opened (kept alive between posts)
        self._warned = False

    def deliver(self, record: dict[str, Any], deadline: float | None) -> Outcome:
        body = json.dumps(record, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "User-Agent": "tledge", "X-Tledge-Event": str(record.get("event")),
                   "X-Tledge-Event-Id": str(record.get("id"))}
        if self.options.secret:
            headers[SIGNATURE_HEADER] = sign(self.options.secret, body)
        timeout = self.options.timeout_s
        if deadline is not None:
            timeout = max(0.05, min(timeout, deadline - time.monotonic()))
        try:
            status = self._post_via_proxy(body, headers, timeout) if self._via_proxy else self._post(body, headers, timeout)
        except (urllib.error.URLError, http.client.HTTPException, socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
            self._warn(f"{self.options.url} unreachable ({getattr(exc, 'reason', exc) or type(exc).__name__}); retrying with backoff")
            return Outcome.RETRY
        if 200 <= status < 300:
            self._warned = False
            return Outcome.DELIVERED
        if status >= 500 or status in _RETRY_STATUSES:
            self._warn(f"{self.options.url} answered {status}; retrying with backoff")
            return Outcome.RETRY
        log.warning("webhook: %s refused event %s with HTTP %d; it is dropped and counted", self.options.url, record.get("id"), status)
        return Outcome.REJECTED

    def _post(self, body: bytes, headers: dict[str, str], timeout: float) -> int:
        """POST on the kept connection; the status. Raises OSError / HTTPException."""
        reused = self._conn is not None
        try:
            return self._request(body, headers, timeout)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self._close_connection()
            if not reused:
                raise
            # The receiver closed the idle kept connection: reconnect and post once more now
            # (a duplicate is possible only if it took the request and then dropped us;
            # the event id lets receivers de-duplicate, as for any retry).
            return self._request(body, headers, timeout)
        except BaseException:
            self._close_connection()  # a timed-out answer may still arrive: never reuse
            raise

    def _request(self, body: bytes, headers: dict[str, str], timeout: float) -> int:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
            self._conn = kind(self._parts.hostname or "", self._parts.port, timeout=timeout)
            self._conn.connect()
            self.connections += 1
        elif self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        self._conn.request("POST", self._path, body=body, headers=headers)
        response = self._conn.getresponse()
        response.read()  # the whole answer, so the connection can carry the next request
        if response.will_close:
            self._close_connection()
        return response.status

    def _post_via_proxy(self, body: bytes, headers: dict[str, str], timeout: float) -> int:
        """One urllib request through the configured proxy; the status."""
        opener = self._opener or urllib.request.build_opener(_NoRedirect)
        request = urllib.request.Request(self.options.url, data=body, headers=headers, method="POST")
        try:
            with opener.open(request, timeout=timeout) as response:
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def on_closed(self) -> None:
        self._close_connection()

    def _warn(self, message: str) -> None:
        if not self._warned:  # once per outage, not once per retry
            log.warning("webhook: %s", message)
            self._warned = True
