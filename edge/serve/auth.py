"""Who may talk to the live view: Host allow-list, fetch metadata, token, failure limit (pure).

Nothing here touches the network; `app.py` calls these for every request.
"""

from __future__ import annotations

import hmac
import time
from collections import deque
from typing import Callable, Mapping
from urllib.parse import urlsplit

from edge.serve.options import is_ip, is_loopback

#: Sec-Fetch-Site values a browser sends for requests the page itself makes ("same-origin")
#: or that the user typed ("none"). "cross-site" and "same-site" (another port or
#: subdomain) are refused; scripts send no such header.
ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})


def cookie_name(port: int) -> str:
    """The session cookie's name; per port, as browsers share cookies across ports of a host."""
    return f"tledge_token_{port}"


def host_name(host_header: str) -> str | None:
    """The host part of a Host header, lower case, without port or brackets; None if malformed."""
    try:
        name = urlsplit(f"//{host_header}").hostname
    except ValueError:
        return None
    return name.rstrip(".") if name else None


def host_allowed(host_header: str, off_loopback: bool, names: frozenset[str]) -> bool:
    """DNS rebinding guard: accept only Host values this server is known by.

    Loopback names are always fine (nobody else can point them here). Off loopback, an
    IP literal is fine too: a rebinding attack needs a DNS name it controls, so any other
    name must be in `names` (the bind address, the machine's name, --allow-host).
    """
    name = host_name(host_header)
    if name is None:
        return False
    if is_loopback(name):
        return True
    if not off_loopback:
        return False
    return name in names or is_ip(name)


def fetch_site_allowed(value: str | None) -> bool:
    """False for a browser request made by another site (Sec-Fetch-Site)."""
    return value is None or value.strip().lower() in ALLOWED_FETCH_SITES


#: The header a state-changing request must carry. A cross-site <form> cannot set headers,
#: and a cross-site fetch() that sets one needs a CORS preflight, which this server never grants.
ACTION_HEADER = "X-Tledge-Action"


def state_change_refusal(headers: Mapping[str, str], scheme: str) -> str | None:
    """Why a POST (a state change) must be refused as possibly cross-site; None when it may go on.

    Besides the token (whose cookie is SameSite=Strict) and Sec-Fetch-Site, a POST must
    carry `ACTION_HEADER` and a JSON body, and an `Origin`, when sent, must be this server.
    """
    if not headers.get(ACTION_HEADER):
        return f"a state-changing request must carry the {ACTION_HEADER} header"
    content_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        return "a state-changing request must send its body as application/json"
    origin = headers.get("Origin")
    if origin is not None:
        try:
            parts = urlsplit(origin)
            same = parts.scheme == scheme and parts.netloc.lower() == headers.get("Host", "").lower() and not parts.path.strip("/")
        except ValueError:
            same = False
        if not same:
            return "the request's Origin is another site"
    return None


def bearer(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header; None for another scheme."""
    scheme, _, value = authorization.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison; anything that is not clean text (e.g. non-UTF-8 bytes) is a mismatch."""
    if not given:
        return False
    try:
        given_bytes = given.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: the header carried bytes that are not UTF-8
        return False
    return hmac.compare_digest(given_bytes, token.encode("utf-8"))


class FailureLimiter:
    """Counts failed logins per client address in a sliding window; over the limit, the client waits.

    Memory is bounded: at most `max_clients` addresses are tracked (the oldest is forgotten).
    """

    def __init__(self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic, max_clients: int = 4096) -> None:
        self.limit, self.window_s, self.clock, self.max_clients = limit, window_s, clock, max_clients
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        cutoff = self.clock() - self.window_s
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def retry_after(self, client: str) -> float:
        """Seconds until `client` may try again; 0 when it is not blocked."""
        times = self._recent(client)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window_s - self.clock())

    def failed(self, client: str) -> bool:
        """Record one failure; True when this one reached the limit (the client is now blocked)."""
        times = self._recent(client)
        if times is None:
            if len(self._failures) >= self.max_clients:
                self._failures.pop(next(iter(self._failures)))
            times = self._failures[client] = deque(maxlen=self.limit)
        times.append(self.clock())
        return len(times) >= self.limit
