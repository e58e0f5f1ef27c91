"""`tledge run --serve/--token` end to end: a real process, a real video, HTTP from outside."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from live_helpers import COLOURS

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "cli-test-token-0123456789"


def start_run(model: Path, labels: Path, video: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "edge.cli", "run", str(model), "--labels", str(labels), "--source", str(video),
            "--loop", "--realtime", "--display", "off", "--no-json", *extra]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def read_url(process: subprocess.Popen[str], lines: list[str], timeout: float = 60) -> str:
    """Read stderr until the 'live view: URL' line (kept in `lines`)."""
    found: list[str] = []
    done = threading.Event()

    def reader() -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            lines.append(line)
            match = re.search(r"live view: (\S+)", line)
            if match and not found:
                found.append(match.group(1))
                done.set()
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    done.wait(timeout)
    assert found, "no 'live view:' line on stderr:\n" + "".join(lines)
    return found[0]


def interrupt(process: subprocess.Popen[str]) -> None:
    """Stop `tledge run` as Ctrl-C does; kill it only if it has not exited 20 s later."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    finally:
        process.kill() if process.poll() is None else None


@pytest.mark.parametrize("way", ["flag", "environment"])
def test_run_serve_with_token(colour_model, colour_video, way: str) -> None:
    model, labels = colour_model
    if way == "flag":
        process = start_run(model, labels, colour_video, "--serve", "127.0.0.1:0", "--token", TOKEN)
    else:  # TLEDGE_TOKEN keeps the secret out of `ps`
        process = start_run(model, labels, colour_video, "--serve", "127.0.0.1:0", env={"TLEDGE_TOKEN": TOKEN})
    lines: list[str] = []
    try:
        url = read_url(process, lines)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        assert TOKEN not in "".join(lines)  # a token the user chose is never printed
        base = url
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(base + "api/model", timeout=10)
        assert denied.value.code == 401
        deadline, latest = time.monotonic() + 20, None
        while latest is None and time.monotonic() < deadline:
            try:
                latest = json.load(urllib.request.urlopen(urllib.request.Request(base + "api/latest", headers={"Authorization": f"Bearer {TOKEN}"}), timeout=10))
            except urllib.error.HTTPError as exc:
                assert exc.code == 503  # no frame yet
                time.sleep(0.2)
        assert latest is not None and latest["label"] in COLOURS
        page = urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"}), timeout=10).read().decode("utf-8")
        assert 'src="static/app.js"' in page and TOKEN not in page
    finally:
        interrupt(process)
    assert process.returncode == 0, "".join(lines)
    assert "Traceback" not in "".join(lines)


def test_run_serve_rejects_a_bad_address(colour_model, colour_video) -> None:
    model, labels = colour_model
    process = start_run(model, labels, colour_video, "--serve", "http://x", "--max-frames", "1")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "[HOST:]PORT" in err and "Traceback" not in err


BLOCK_AIOHTTP = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'aiohttp':
            raise ImportError('No module named aiohttp (blocked by the test)')
sys.meta_path.insert(0, Block())
sys.argv = ['tledge'] + ARGS
from edge.cli import main
main()
"""


def test_run_serve_without_the_extra_names_it(colour_model, colour_video) -> None:
    model, labels = colour_model
    args = ["run", str(model), "--labels", str(labels), "--source", str(colour_video), "--display", "off", "--serve", "0"]
    result = subprocess.run([sys.executable, "-c", BLOCK_AIOHTTP.replace("ARGS", repr(args))], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert 'pip install "tledge[serve]"' in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("way", ["flag", "environment"])
def test_a_short_token_is_a_usage_error(colour_model, colour_video, way: str) -> None:
    model, labels = colour_model
    extra = ("--token", "t0k") if way == "flag" else ()
    process = start_run(model, labels, colour_video, "--serve", "0", *extra, env={"TLEDGE_TOKEN": "t0k"} if way == "environment" else None)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2, err
    flat = " ".join(re.sub("[\u2500-\u257f]", " ", err).split())  # without Rich's box
    assert "use at least 16" in flat and "--token" in flat and "Traceback" not in err


def test_off_loopback_without_a_token_generates_one(colour_model, colour_video) -> None:
    """127.0.0.2 treated as a network address (hidden --serve-as-network): a URL with a fresh token, 401 without it."""
    model, labels = colour_model
    process = start_run(model, labels, colour_video, "--serve", "127.0.0.2:0", "--serve-as-network", env={"TLEDGE_TOKEN": ""})
    lines: list[str] = []
    try:
        url = read_url(process, lines)
        match = re.fullmatch(r"http://127\.0\.0\.2:(\d+)/\?token=([A-Za-z0-9_-]+)", url)
        assert match, url
        port, token = match.groups()
        assert len(token) >= 22  # >= 128 bits of URL-safe base64
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"http://127.0.0.2:{port}/api/model", timeout=10)
        assert denied.value.code == 401
        allowed = urllib.request.Request(f"http://127.0.0.2:{port}/api/model", headers={"Authorization": f"Bearer {token}"})
        assert json.load(urllib.request.urlopen(allowed, timeout=10))["labels"] == list(COLOURS)
    finally:
        interrupt(process)
    text = "".join(lines)
    assert text.count(token) == 1, text  # printed once, never in a log line
    assert process.returncode == 0 and "Traceback" not in text
