"""Events to a webhook: one JSON POST per event, retried with backoff, signed with HMAC.

    POST URL   body: the event (JSON)   Content-Type: application/json
               X-Tledge-Event: start|end, X-Tledge-Event-Id: <id>
               X-Tledge-Signature: sha256=<hex HMAC-SHA256 of the body>   (with a secret)

A 2xx answer delivers the event. Connection errors, timeouts, 408, 429 and 5xx are
retried (same event, exponential backoff, order kept). Any other 4xx is the receiver
saying no for good: the event is dropped, counted as rejected and logged. Uses the
standard library (urllib) in the worker thread: no extra dependency on the device.
"""

from __future__ import annotations

import hashlib
import hmac
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


class WebhookOutput(QueuedOutput):
    name = "webhook"

    def __init__(self, options: WebhookOptions, queue: DiskQueue, backoff: Backoff = Backoff()) -> None:
        super().__init__(queue, backoff)
        self.options = options
        self._opener = urllib.request.build_opener(_NoRedirect)
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
        request = urllib.request.Request(self.options.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=timeout) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
            self._warn(f"{self.options.url} unreachable ({getattr(exc, 'reason', exc)}); retrying with backoff")
            return Outcome.RETRY
        if 200 <= status < 300:
            self._warned = False
            return Outcome.DELIVERED
        if status >= 500 or status in _RETRY_STATUSES:
            self._warn(f"{self.options.url} answered {status}; retrying with backoff")
            return Outcome.RETRY
        log.warning("webhook: %s refused event %s with HTTP %d; it is dropped and counted", self.options.url, record.get("id"), status)
        return Outcome.REJECTED

    def _warn(self, message: str) -> None:
        if not self._warned:  # once per outage, not once per retry
            log.warning("webhook: %s", message)
            self._warned = True
