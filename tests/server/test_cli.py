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


@pytest.mark.parametrize("way", ["flag", "environment"])
def test_run_serve_with_token(colour_model, colour_video, way: str) -> None:
    model, labels = colour_model
    if way == "flag":
        process = start_run(model, labels, colour_video, "--serve", "127.0.0.1:0", "--token", "t0k")
    else:  # TLEDGE_TOKEN keeps the secret out of `ps`
        process = start_run(model, labels, colour_video, "--serve", "127.0.0.1:0", env={"TLEDGE_TOKEN": "t0k"})
    lines: list[str] = []
    try:
        url = read_url(process, lines)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/?token=t0k")
        base = url.split("?")[0]
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(base + "api/model", timeout=10)
        assert denied.value.code == 401
        deadline, latest = time.monotonic() + 20, None
        while latest is None and time.monotonic() < deadline:
            try:
                latest = json.load(urllib.request.urlopen(base + "api/latest?token=t0k", timeout=10))
            except urllib.error.HTTPError as exc:
                assert exc.code == 503  # no frame yet
                time.sleep(0.2)
        assert latest is not None and latest["label"] in COLOURS
        page = urllib.request.urlopen(url, timeout=10).read().decode("utf-8")
        assert "static/app.js?token=t0k" in page
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        finally:
            process.kill() if process.poll() is None else None
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
