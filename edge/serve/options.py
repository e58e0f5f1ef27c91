"""How the live view listens and whom it lets in: options, bind parsing, tokens (pure, no I/O)."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ServeError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
MIN_TOKEN_CHARS = 16  # shorter secrets are refused: a guessable token is no protection
TOKEN_BYTES = 24  # generated tokens: 192 random bits, 32 URL-safe characters


@dataclass(frozen=True)
class ServeOptions:
    """How the live view serves. Every bound keeps a Pi's CPU, memory and network in check.

    Off loopback (`off_loopback`), a token is mandatory; `network=True` treats a loopback
    address as if it were on the network (tests bind 127.0.0.2 that way).
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port (see `LiveViewSink.port`)
    token: str | None = None  # None: no authentication (allowed on loopback only)
    network: bool | None = None  # None: off loopback exactly when `host` is not a loopback address
    allow_hosts: tuple[str, ...] = ()  # extra Host names accepted off loopback (--allow-host)
    tls_cert: Path | None = None  # PEM certificate chain: serve https
    tls_key: Path | None = None  # PEM private key of `tls_cert`
    stream_fps: float = 10.0  # frames/s, the most any viewer receives
    jpeg_quality: int = 70  # OpenCV scale 1..100
    max_width: int = 640  # pixels; wider frames are downscaled before encoding
    max_viewers: int = 16  # open /stream.mjpg + /api/events connections, all clients
    max_viewers_per_client: int = 4  # the same, per client address
    max_connections: int = 64  # open TCP connections; more are closed at once
    header_timeout_s: float = 10.0  # a connection must send a complete request this soon
    write_timeout_s: float = 10.0  # a viewer that takes no data for this long is dropped
    auth_failures_per_minute: int = 10  # failed logins per client address before 429

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ServeError(f"Port {self.port} is out of range; use 1-65535 (or 0 for any free port)")
        if self.token is not None:
            check_token(self.token)
        elif self.off_loopback:
            raise ServeError(
                f"Serving on {self.host} (off loopback) needs a token: pass --token or set TLEDGE_TOKEN "
                "(tledge run generates one when neither is given)"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ServeError("TLS needs both --tls-cert FILE and --tls-key FILE")
        if not 0.5 <= self.stream_fps <= 30:
            raise ServeError(f"Stream rate {self.stream_fps} fps is out of range; use 0.5-30")
        if not 10 <= self.jpeg_quality <= 95:
            raise ServeError(f"JPEG quality {self.jpeg_quality} is out of range; use 10-95")
        if not 64 <= self.max_width <= 1920:
            raise ServeError(f"Stream width {self.max_width} px is out of range; use 64-1920")
        if min(self.max_viewers, self.max_viewers_per_client, self.max_connections, self.auth_failures_per_minute) < 1:
            raise ServeError("max_viewers, max_viewers_per_client, max_connections and auth_failures_per_minute must be >= 1")
        if self.write_timeout_s <= 0 or self.header_timeout_s <= 0:
            raise ServeError("write_timeout_s and header_timeout_s must be > 0")
        for name in self.allow_hosts:
            if not name or any(c in name for c in "/:@ ") and not is_ip(name):
                raise ServeError(f"--allow-host {name!r}: give a bare host name such as mypi.local")

    @property
    def off_loopback(self) -> bool:
        """True when others on the network may reach the server (a token is then required)."""
        return self.network if self.network is not None else not is_loopback(self.host)

    @property
    def all_interfaces(self) -> bool:
        """True when the server listens on every network interface (0.0.0.0 or ::)."""
        return is_all_interfaces(self.host)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


def check_token(token: str) -> str:
    """Return `token` if it is usable as a secret, else raise ServeError saying why."""
    if len(token) < MIN_TOKEN_CHARS:
        raise ServeError(
            f"the token is {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
            "(or leave it out and tledge generates one off loopback)"
        )
    if token != token.strip() or not token.isprintable():
        raise ServeError("the token has spaces at its ends or control characters; use printable characters only")
    return token


def new_token() -> str:
    """A fresh URL-safe random token (192 bits)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def is_loopback(host: str) -> bool:
    """True for localhost and the loopback addresses (127.0.0.0/8, ::1)."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
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


def is_ip(text: str) -> bool:
    """True when `text` is an IPv4 or IPv6 address (not a name)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


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


def allowed_host_names(options: ServeOptions) -> frozenset[str]:
    """Host names (lower case, no port) that requests may carry besides loopback names and IPs.

    Off loopback: the bind address, this machine's host name (and its mDNS `.local` form)
    and `allow_hosts`. On loopback: none (loopback names only).
    """
    if not options.off_loopback:
        return frozenset()
    names = {n.lower().rstrip(".") for n in options.allow_hosts}
    if not options.all_interfaces:
        names.add(options.host.lower())
    machine = socket.gethostname().lower()
    if machine:
        names.update({machine, f"{machine}.local"})
    return frozenset(names)


def display_host(options: ServeOptions) -> str:
    """The host to print in the URL: the machine's name when bound to all interfaces."""
    host = socket.gethostname() if options.all_interfaces else options.host
    return f"[{host}]" if ":" in host else host
