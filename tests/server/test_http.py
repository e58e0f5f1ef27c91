"""The live view's endpoints: the token on every one, traversal, content, headers."""

from __future__ import annotations

import http.client
import http.cookies
import json
import time
from pathlib import Path
from typing import Iterator

import pytest
from live_helpers import COLOURS, Counter, http_get, running_pipeline

from edge.serve import ASSETS, LiveViewSink, ServeOptions

TOKEN = "s3cret token/with?odd&chars"
QUOTED = "s3cret%20token%2Fwith%3Fodd%26chars"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
COOKIE = "tledge_token_{port}"
ENDPOINTS = ["/", "/static/app.js", "/static/style.css", "/api/model", "/api/latest", "/api/events", "/stream.mjpg"]
STATIC = Path(__file__).resolve().parents[2] / "edge" / "serve" / "static"


def request(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One raw GET to the live view on loopback (see `live_helpers.http_get`)."""
    return http_get("127.0.0.1", port, path, headers)


@pytest.fixture(scope="module")
def live(colour_info, colour_video) -> Iterator[LiveViewSink]:
    """A token-protected live view fed by the real pipeline; yields once a result exists."""
    sink = LiveViewSink(ServeOptions(port=0, token=TOKEN, stream_fps=10, auth_failures_per_minute=10_000), colour_info)
    counter = Counter()
    with running_pipeline(colour_info, colour_video, [sink, counter]):
        deadline = time.monotonic() + 20
        while counter.frames < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert counter.frames >= 3, "the pipeline produced no frames"
        yield sink


@pytest.mark.parametrize("path", ENDPOINTS + ["/nonexistent", "/static/../server.py"])
def test_every_endpoint_needs_the_token(live: LiveViewSink, path: str) -> None:
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        status, response_headers, body = request(live.port, path, headers)
        assert status == 401, (path, headers)
        assert response_headers.get("www-authenticate", "").startswith("Bearer")
        assert b"token" in body
    status, _, _ = request(live.port, f"{path}?token=wrong")
    assert status == 401


@pytest.mark.parametrize("path", ENDPOINTS)
def test_the_token_opens_every_endpoint(live: LiveViewSink, path: str) -> None:
    by_header = request(live.port, path, AUTH)
    assert by_header[0] == 200, path
    # ?token= trades the token for a cookie and sends the browser to the same URL without it.
    status, headers, _ = request(live.port, f"{path}?token={QUOTED}&x=1")
    assert status == 303 and headers["location"] == f"{path}?x=1", (path, headers)
    cookie = headers["set-cookie"]
    name = COOKIE.format(port=live.port)
    assert cookie.startswith(f'{name}="{TOKEN}"') or cookie.startswith(f"{name}={QUOTED}") or name in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    morsel = http.cookies.SimpleCookie(cookie)[name]
    by_cookie = request(live.port, path, {"Cookie": f"{name}={morsel.coded_value}"})
    assert by_cookie[0] == 200, path
    wrong = request(live.port, path, {"Cookie": f"{name}=wrong-token-wrong-token"})
    assert wrong[0] == 401


TRAVERSALS = [
    "/static/../server.py",
    "/static/%2e%2e/server.py",
    "/static/%2e%2e%2fserver.py",
    "/static/..%2fserver.py",
    "/static/%2E%2E%2F%2E%2E%2Fpyproject.toml",
    "/static/..%5cserver.py",
    "/static/....//server.py",
    "/static/app.js/../../server.py",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/%2Fwork%2Fmain%2Fedge%2Fserver.py",
    "/../edge/server.py",
    "//etc/passwd",
    "/etc/passwd",
    "/static/%00app.js",
    "/static/index.html",
    "/static/__init__.py",
    "/server.py",
    "/edge/server.py",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_file_outside_the_page_assets_is_reachable(live: LiveViewSink, path: str) -> None:
    status, _, body = request(live.port, path, AUTH)
    assert status in (400, 403, 404), (path, status)
    assert b"LiveViewSink" not in body and b"root:" not in body and b"[project]" not in body


def test_assets_are_the_shipped_files(live: LiveViewSink) -> None:
    for name, content_type in ASSETS.items():
        status, headers, body = request(live.port, f"/static/{name}", AUTH)
        assert status == 200 and body == (STATIC / name).read_bytes()
        assert headers["content-type"] == content_type
        assert headers["x-content-type-options"] == "nosniff"


def test_page_never_holds_the_token(live: LiveViewSink) -> None:
    status, headers, body = request(live.port, "/", AUTH)
    page = body.decode("utf-8")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert 'src="static/app.js"' in page and 'href="static/style.css"' in page
    assert TOKEN not in page and QUOTED not in page and "token=" not in page
    script = request(live.port, "/static/app.js", AUTH)[2].decode("utf-8")
    assert "token" not in script.split("\n", 3)[-1]  # past the header comment: no code touches a token
    assert "http://" not in page and "https://" not in page  # no CDN: works offline
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer"


def test_model_endpoint(live: LiveViewSink) -> None:
    status, _, body = request(live.port, "/api/model", AUTH)
    model = json.loads(body)
    assert status == 200
    assert model["name"] == "colours"
    assert model["labels"] == list(COLOURS)


def test_latest_is_the_newest_result(live: LiveViewSink) -> None:
    first = json.loads(request(live.port, "/api/latest", {"Authorization": f"Bearer {TOKEN}"})[2])
    time.sleep(0.3)
    second = json.loads(request(live.port, "/api/latest", {"Authorization": f"Bearer {TOKEN}"})[2])
    assert set(first) == {"index", "timestamp", "label", "score", "top", "latency_ms", "fps", "dropped"}
    assert first["label"] in COLOURS and first["top"][0]["label"] == first["label"]
    assert second["index"] > first["index"]  # live, not a cached answer


def test_latest_before_the_first_frame_says_retry(colour_info) -> None:
    with LiveViewSink(ServeOptions(port=0), colour_info) as sink:
        status, headers, body = request(sink.port, "/api/latest")
    assert status == 503 and headers["retry-after"] == "1" and b"retry" in body


def test_events_stream_results(live: LiveViewSink) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    try:
        conn.request("GET", "/api/events", headers=AUTH)
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
        events: list[dict] = []
        deadline = time.monotonic() + 10
        while len(events) < 3 and time.monotonic() < deadline:
            line = response.fp.readline().decode("utf-8")
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    finally:
        conn.close()
    assert len(events) == 3
    assert [e["index"] for e in events] == sorted({e["index"] for e in events})  # new results, in order
    assert all(e["label"] in COLOURS for e in events)


@pytest.mark.parametrize("host", ["evil.example:80", "192.168.1.5", "localhost.evil.example"])
def test_loopback_server_refuses_foreign_host_names(live: LiveViewSink, host: str) -> None:
    """DNS rebinding: a page at evil.example re-pointed to 127.0.0.1 gets nothing, even with the token."""
    status, _, body = request(live.port, "/api/latest", {"Host": host, **AUTH})
    assert status == 403 and b"localhost" in body


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_loopback_names_are_accepted(live: LiveViewSink, host: str) -> None:
    status, _, _ = request(live.port, "/api/model", {"Host": f"{host}:{live.port}", **AUTH})
    assert status == 200
