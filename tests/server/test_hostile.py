"""Hostile and faulty clients against a real live view on loopback (issue #11; tests/BAD_INPUTS.md).

"Off loopback" is 127.0.0.2 with `network=True`: the server then behaves as on a LAN
address (token required, Host allow-list of names) without needing a real interface.
"""

from __future__ import annotations

import http.client
import json
import logging
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from live_helpers import Counter, MjpegViewer, http_get, running_pipeline, wait_until

from edge.classifier import Classifier
from edge.pipeline import Pipeline, PipelineOptions
from edge.results import FrameResult
from edge.serve import LiveViewSink, ServeOptions
from edge.sources import VideoFileSource

TOKEN = "hostile-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def raw(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    """Send raw bytes, return everything the server answers until it closes."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture(scope="module")
def loopback(colour_info) -> Iterator[LiveViewSink]:
    with LiveViewSink(ServeOptions(port=0, token=TOKEN, auth_failures_per_minute=10_000), colour_info) as sink:
        yield sink


@pytest.fixture(scope="module")
def network(colour_info) -> Iterator[LiveViewSink]:
    options = ServeOptions(host="127.0.0.2", port=0, token=TOKEN, network=True, allow_hosts=("camera.example",), auth_failures_per_minute=10_000)
    with LiveViewSink(options, colour_info) as sink:
        yield sink


# -- who may ask ---------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.nip.io", "", "[::1", "a b"])
@pytest.mark.parametrize("bind", ["loopback", "network"])
def test_dns_rebinding_host_values_are_refused_on_every_bind(request, bind: str, host: str) -> None:
    sink = request.getfixturevalue(bind)
    status, _, body = http_get(sink.address[0], sink.port, "/api/model", {"Host": host, **AUTH})
    assert status in (400, 403), (bind, host, status)  # 400: aiohttp refuses the unparseable ones itself
    assert b"colours" not in body


def test_network_bind_accepts_its_own_names(network: LiveViewSink) -> None:
    for host in ("127.0.0.2", f"127.0.0.2:{network.port}", socket.gethostname(), "camera.example", "localhost", "192.168.1.20"):
        status, _, _ = http_get("127.0.0.2", network.port, "/api/model", {"Host": host, **AUTH})
        assert status == 200, host
    assert http_get("127.0.0.2", network.port, "/api/model")[0] == 401  # a name alone opens nothing


def test_loopback_bind_refuses_lan_addresses(loopback: LiveViewSink) -> None:
    assert http_get("127.0.0.1", loopback.port, "/api/model", {"Host": "192.168.1.20", **AUTH})[0] == 403


@pytest.mark.parametrize("site", ["cross-site", "same-site", "CROSS-SITE"])
def test_cross_site_requests_are_refused(loopback: LiveViewSink, site: str) -> None:
    status, _, body = http_get("127.0.0.1", loopback.port, "/stream.mjpg", {"Sec-Fetch-Site": site, **AUTH})
    assert status == 403 and b"other sites" in body
    assert http_get("127.0.0.1", loopback.port, "/api/model", {"Sec-Fetch-Site": "same-origin", **AUTH})[0] == 200


def test_every_response_has_the_base_headers_and_no_version_banner(loopback: LiveViewSink, caplog) -> None:
    answers = [http_get("127.0.0.1", loopback.port, path, headers)[1] for path, headers in
               [("/api/model", AUTH), ("/api/model", None), ("/nope", AUTH), ("/api/model", {"Host": "evil.example", **AUTH})]]
    with caplog.at_level(logging.INFO, logger="tledge.edge"):
        bad = raw(loopback.port, b"GARBAGE\x00 / HTTP/1.1\r\n\r\n").split(b"\r\n\r\n")[0].decode("latin-1").lower()
    assert [r.exc_info for r in caplog.records if "bad request" in r.getMessage()] == [None]  # one line, no traceback
    for headers in answers:
        assert headers["cross-origin-resource-policy"] == "same-origin"
        assert headers["server"] == "tledge"
    assert bad.split(" ")[1] == "400" and "server: tledge\r\n" in bad + "\r\n" and "aiohttp" not in bad and "python" not in bad
    assert "cross-origin-resource-policy: same-origin" in bad


# -- credentials ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "header",
    [b"Authorization: Bearer \xff\xfe\xfd", b"Authorization: Bearer " + TOKEN.encode() + b"\xff", b"Authorization: \xc3\x28",
     b"Authorization: Bearer", b"Cookie: tledge_token_PORT=\xff\xfe", b"Cookie: tledge_token_PORT=\"unterminated"],
)
def test_malformed_credentials_are_401_with_one_log_line(loopback: LiveViewSink, header: bytes, caplog) -> None:
    header = header.replace(b"PORT", str(loopback.port).encode())
    with caplog.at_level(logging.INFO, logger="tledge.edge"):
        answer = raw(loopback.port, b"GET /api/model HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + header + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 401"), answer[:80]
    records = [r for r in caplog.records if r.name == "tledge.edge"]
    assert len(records) == 1 and records[0].exc_info is None and "\n" not in records[0].getMessage()


def test_query_token_with_bad_percent_bytes_is_401(loopback: LiveViewSink) -> None:
    assert http_get("127.0.0.1", loopback.port, "/api/model?token=%ff%fe%00")[0] == 401


def test_failed_logins_are_limited_per_client_address(colour_info, caplog) -> None:
    with LiveViewSink(ServeOptions(port=0, token=TOKEN, auth_failures_per_minute=10), colour_info) as sink, \
            caplog.at_level(logging.INFO, logger="tledge.edge"):
        statuses = [http_get("127.0.0.1", sink.port, "/api/model", {"Authorization": f"Bearer guess-{i:012d}"})[0] for i in range(10)]
        assert statuses == [401] * 10
        status, headers, _ = http_get("127.0.0.1", sink.port, "/api/model", AUTH)  # even the right token now waits
        assert status == 429 and 1 <= int(headers["retry-after"]) <= 61
        for _ in range(5):
            assert http_get("127.0.0.1", sink.port, "/api/model", {"Authorization": "Bearer x" * 3})[0] == 429
        assert http_get("127.0.0.1", sink.port, "/api/model", AUTH, source="127.0.0.3")[0] == 200  # another client is not punished
        assert http_get("127.0.0.1", sink.port, "/api/model", source="127.0.0.3")[0] == 401  # no credential: not a guess
    lines = [r.getMessage() for r in caplog.records if r.name == "tledge.edge"]
    assert sum("429" in line for line in lines) == 1  # the limit is logged once, not per refused request
    assert not any(TOKEN in line or "guess-" in line for line in lines)  # no credential in any log line


def test_no_token_in_any_log_line(loopback: LiveViewSink, caplog) -> None:
    with caplog.at_level(logging.DEBUG):
        http_get("127.0.0.1", loopback.port, f"/api/model?token={TOKEN}", {"Host": "evil.example"})
        http_get("127.0.0.1", loopback.port, f"/x?token={TOKEN}")
        raw(loopback.port, f"GET /?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n".encode())
    messages = [r.getMessage() for r in caplog.records]
    assert messages and not any(TOKEN in m for m in messages), messages
    assert all(r.exc_info is None for r in caplog.records)


# -- slow and greedy clients -----------------------------------------------------------------
def test_slow_header_and_silent_connections_are_closed(colour_info, caplog) -> None:
    with LiveViewSink(ServeOptions(port=0, header_timeout_s=1.0), colour_info) as sink, caplog.at_level(logging.INFO, logger="tledge.edge"):
        silent = socket.create_connection(("127.0.0.1", sink.port), timeout=10)
        slow = socket.create_connection(("127.0.0.1", sink.port), timeout=10)
        slow.sendall(b"GET /api/model HTTP/1.1\r\n")
        closed = False
        for i in range(30):  # one header line every 0.3 s: never a complete request
            try:
                slow.sendall(f"X-Slow-{i}: x\r\n".encode())
            except OSError:
                closed = True
                break
            time.sleep(0.3)
        closed = closed or slow.recv(100) == b""
        assert closed, "a trickling client kept its connection"
        assert silent.recv(100) == b""
        assert wait_until(lambda: sink.connections == 0, 5)
        assert http_get("127.0.0.1", sink.port, "/api/model")[0] == 200  # the server still serves
        silent.close()
        slow.close()
    assert any("no complete request" in r.getMessage() for r in caplog.records)


def test_open_connections_are_capped(colour_info) -> None:
    with LiveViewSink(ServeOptions(port=0, max_connections=5, header_timeout_s=30), colour_info) as sink:
        idle = [socket.create_connection(("127.0.0.1", sink.port), timeout=10) for _ in range(5)]
        assert wait_until(lambda: sink.connections == 5, 5)
        extra = socket.create_connection(("127.0.0.1", sink.port), timeout=10)
        try:
            extra.sendall(b"GET /api/model HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = extra.recv(100)
        except ConnectionResetError:
            answer = b""
        assert answer == b"", answer
        idle.pop().close()
        assert wait_until(lambda: sink.connections == 4, 5)
        assert http_get("127.0.0.1", sink.port, "/api/model")[0] == 200
        for sock in idle + [extra]:
            sock.close()


def test_viewers_are_capped_per_client_address(colour_info, colour_video) -> None:
    sink = LiveViewSink(ServeOptions(port=0, max_viewers=16, max_viewers_per_client=2), colour_info)
    with running_pipeline(colour_info, colour_video, [sink]):
        viewers = [MjpegViewer(sink.port) for _ in range(2)]
        for viewer in viewers:
            viewer.start()
        assert wait_until(lambda: sink.viewers == 2, 5)
        status, _, body = http_get("127.0.0.1", sink.port, "/api/events")
        assert status == 503 and b"your address" in body
        assert http_get("127.0.0.1", sink.port, "/api/events", source="127.0.0.3")[0] == 200  # another client gets in
        for viewer in viewers:
            viewer.stop()


class _KeepOpen:
    """Passes frames to a sink but leaves it open when a pipeline ends (several runs, one server)."""

    def __init__(self, sink) -> None:  # noqa: ANN001 - any Sink
        self.sink = sink

    def emit(self, frame_rgb: np.ndarray, result: FrameResult) -> None:
        self.sink.emit(frame_rgb, result)

    def close(self) -> None:
        pass


def _indices_of_a_full_run(info, video: Path, sinks: list, frames: int) -> list[int]:  # noqa: ANN001
    counter = Counter()
    seen: list[int] = []
    counter.emit = lambda frame, result: seen.append(result.index)  # type: ignore[method-assign]
    stats = Pipeline(Classifier(info, threads=1), VideoFileSource(video), [*sinks, counter],
                     PipelineOptions(loop=True, max_frames=frames)).run()
    assert stats.frames == frames and stats.dropped == 0
    return seen


def test_stuck_viewers_never_slow_inference(colour_info, big_noisy_video) -> None:
    """Behaviour, not a stopwatch: with viewers whose sockets are full, every frame is still classified."""
    options = ServeOptions(port=0, stream_fps=30, jpeg_quality=95, write_timeout_s=120, max_viewers_per_client=8)
    with LiveViewSink(options, colour_info) as sink:
        stuck = []
        for _ in range(3):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window, never read
            sock.connect(("127.0.0.1", sink.port))
            sock.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: x\r\n\r\n".encode())
            stuck.append(sock)
        assert wait_until(lambda: sink.viewers == 3, 5)
        broadcast = sink._app.broadcast  # noqa: SLF001 - the test watches the server's own counters

        def blocked() -> bool:  # the server has frames for them but cannot write any
            sent, published = sink.frames_sent, broadcast.jpeg_version
            time.sleep(1.0)
            return sink.frames_sent == sent and broadcast.jpeg_version > published

        with running_pipeline(colour_info, big_noisy_video, [_KeepOpen(sink)]):
            assert wait_until(blocked, 30, step=0), "the viewers never got stuck"
        sent_before = sink.frames_sent
        with_stuck = _indices_of_a_full_run(colour_info, big_noisy_video, [_KeepOpen(sink)], 240)
        assert sink.viewers == 3 and sink.frames_sent == sent_before  # still attached, still stuck
        for sock in stuck:
            sock.close()
    alone = _indices_of_a_full_run(colour_info, big_noisy_video, [], 240)
    assert with_stuck == alone == list(range(240))  # every frame, in order, as with no viewers


# -- TLS -----------------------------------------------------------------------------------
def test_tls_serves_https_with_a_secure_cookie(colour_info, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl program is not installed (apt-get install openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    context = ssl.create_default_context(cafile=str(cert))
    with LiveViewSink(ServeOptions(port=0, token=TOKEN, tls_cert=cert, tls_key=key), colour_info) as sink:
        assert sink.url.startswith("https://127.0.0.1:")
        status, _, body = http_get("127.0.0.1", sink.port, "/api/model", AUTH, context=context)
        assert status == 200 and json.loads(body)["name"] == "colours"
        status, headers, _ = http_get("127.0.0.1", sink.port, f"/?token={TOKEN}", context=context)
        assert status == 303 and "Secure" in headers["set-cookie"] and "HttpOnly" in headers["set-cookie"]
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):  # plain http gets no page
            http_get("127.0.0.1", sink.port, "/api/model", AUTH)


def test_tls_with_a_bad_key_is_a_clear_error(colour_info, tmp_path: Path) -> None:
    from edge.errors import ServeError

    (tmp_path / "cert.pem").write_text("not a certificate")
    with pytest.raises(ServeError, match="--tls-cert"):
        LiveViewSink(ServeOptions(port=0, token=TOKEN, tls_cert=tmp_path / "cert.pem", tls_key=tmp_path / "cert.pem"), colour_info)


# -- one definition of latency ---------------------------------------------------------------
def test_panel_and_picture_describe_the_same_frame(colour_info, colour_video) -> None:
    """Each server-sent event is the result of a frame that was sent as a JPEG (its X-Frame-Index)."""
    sink = LiveViewSink(ServeOptions(port=0, stream_fps=10), colour_info)
    with running_pipeline(colour_info, colour_video, [sink]):
        viewer = MjpegViewer(sink.port)
        viewer.start()
        assert wait_until(lambda: len(viewer.indices) >= 2, 10)
        conn = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=10)
        conn.request("GET", "/api/events")
        response = conn.getresponse()
        events = []
        while len(events) < 8:
            line = response.fp.readline().decode("utf-8")
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
        conn.close()
        time.sleep(0.3)
        viewer.stop()
    published = set(viewer.indices)
    assert all(event["index"] in published for event in events), ([e["index"] for e in events], sorted(published))
    assert all(set(event) >= {"latency_ms", "fps", "index"} for event in events)
