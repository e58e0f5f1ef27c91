"""Where the live view listens: [HOST:]PORT parsing, the 127.0.0.1 default, all interfaces only with a token."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import pytest

from edge.errors import ServeError
from edge.serve import LiveViewSink, ServeOptions, is_all_interfaces, parse_bind


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080", ("127.0.0.1", 8080)),
        (":8080", ("127.0.0.1", 8080)),
        ("0", ("127.0.0.1", 0)),
        ("0.0.0.0:9000", ("0.0.0.0", 9000)),
        ("192.168.1.20:80", ("192.168.1.20", 80)),
        ("localhost:8080", ("localhost", 8080)),
        ("[::]:8080", ("::", 8080)),
        ("[::1]:8081", ("::1", 8081)),
    ],
)
def test_parse_bind(text: str, expected: tuple[str, int]) -> None:
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["", "http", "80x", "65536", "host:", "::1:8080", "[::1]8080", "1.2.3.4:-1"])
def test_parse_bind_rejects_with_an_example(text: str) -> None:
    with pytest.raises(ServeError, match=r"\[HOST:\]PORT|brackets|\[ADDRESS\]:PORT"):
        parse_bind(text)


def test_all_interfaces_detection() -> None:
    assert is_all_interfaces("0.0.0.0") and is_all_interfaces("::") and is_all_interfaces("")
    assert not is_all_interfaces("127.0.0.1") and not is_all_interfaces("::1") and not is_all_interfaces("localhost")


@pytest.mark.parametrize(
    "options",
    [dict(stream_fps=0), dict(stream_fps=120), dict(jpeg_quality=100), dict(jpeg_quality=1), dict(max_width=10000), dict(token="  "), dict(token="short-token"), dict(token=" " + "x" * 20), dict(port=70000),
     dict(host="0.0.0.0"), dict(host="192.168.1.20"), dict(host="127.0.0.2", network=True), dict(tls_cert="cert.pem"), dict(allow_hosts=("evil.example/x",))],
)
def test_options_are_bounded(options: dict) -> None:
    with pytest.raises(ServeError):
        ServeOptions(**options)


def _other_local_address() -> str | None:
    """A non-loopback address of this machine, if it has one (the route to a public IP; nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: connect() on UDP only picks a route
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_default_bind_is_loopback_only(colour_info, capsys) -> None:
    with LiveViewSink.from_cli("0", None, colour_info) as sink:
        assert sink.address[0] == "127.0.0.1"
        assert urllib.request.urlopen(f"http://127.0.0.1:{sink.port}/api/model", timeout=5).status == 200
        other = _other_local_address()
        if other is not None:  # the same port on the machine's LAN address is not open
            with pytest.raises(OSError):
                socket.create_connection((other, sink.port), timeout=2).close()
    err = capsys.readouterr().err
    assert "warning" not in err
    assert f"live view: http://127.0.0.1:{sink.port}/" in err


def test_all_interfaces_gets_a_generated_token(colour_info, capsys) -> None:
    with LiveViewSink.from_cli("0.0.0.0:0", None, colour_info, allow_hosts=("mypi.example",)) as sink:
        token = sink.options.token
        assert sink.address[0] == "0.0.0.0" and token is not None and len(token) >= 32
        denied = urllib.request.Request(f"http://127.0.0.1:{sink.port}/api/model")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(denied, timeout=5)
        assert refused.value.code == 401
        by_name = urllib.request.Request(f"http://127.0.0.1:{sink.port}/api/model", headers={"Host": "mypi.example", "Authorization": f"Bearer {token}"})
        assert urllib.request.urlopen(by_name, timeout=5).status == 200  # reached by an --allow-host name
    err = capsys.readouterr().err
    assert err.count(token) == 1  # printed once, in the URL
    assert f"?token={token}" in err and "open to the network" in err


def test_port_in_use_is_a_clear_error(colour_info) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match="choose another with --serve"):
            LiveViewSink(ServeOptions(port=port), colour_info)


def test_close_releases_the_port(colour_info) -> None:
    sink = LiveViewSink(ServeOptions(port=0), colour_info)
    port = sink.port
    sink.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    LiveViewSink(ServeOptions(port=port), colour_info).close()  # free again


def test_without_aiohttp_the_error_names_the_extra(colour_model) -> None:
    model, labels = colour_model
    code = f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] == 'aiohttp':
                    raise ImportError('blocked by the test')
        sys.meta_path.insert(0, Block())
        from edge.bundle import load_model_info
        from edge.errors import MissingExtraError
        from edge.serve import LiveViewSink
        try:
            LiveViewSink.from_cli('0', None, load_model_info({str(model)!r}, labels_path={str(labels)!r}))
        except MissingExtraError as exc:
            print(exc)
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert 'pip install "tledge[serve]"' in result.stdout


def test_importing_the_serve_package_loads_neither_tensorflow_nor_aiohttp() -> None:
    code = "import sys, edge.serve, edge.serve.options, edge.serve.auth; print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'trainer', 'aiohttp')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
