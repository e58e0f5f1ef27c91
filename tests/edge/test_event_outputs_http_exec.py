"""Webhooks to a REAL aiohttp server (retries on 500s and timeouts, HMAC signature,
order) and --exec commands (environment, hanging, failing, one per label)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from edge.errors import EventOutputError, OutputUsageError
from edge.events import EventOptions, EventTracker
from edge.outputs.exec import ExecOptions, ExecOutput
from edge.outputs.queue import DiskQueue
from edge.outputs.webhook import WebhookOptions, WebhookOutput, sign
from edge.outputs.worker import Backoff

pytest.importorskip("aiohttp", reason="aiohttp is not installed (pip install 'tledge[serve]')")
from webhook_server import WebhookServer  # noqa: E402


def _events(labels: str, device: str = "cam1"):
    names = {"b": "bees", "w": "wasps", "-": "unknown"}
    tracker = EventTracker(EventOptions(hold=1, device=device))
    out = []
    for i, ch in enumerate(labels):
        out += tracker.feed(names[ch], 0.9, i, 1000.0 + i)
    return out + tracker.finish(len(labels), 1000.0 + len(labels))


@pytest.fixture()
def server():
    srv = WebhookServer()
    yield srv
    srv.close()


def test_webhook_retries_500s_and_timeouts_in_order_and_signs(server, tmp_path: Path) -> None:
    server.script.extend([500, 503, ("sleep", 1.5), 500])  # then 200s
    out = WebhookOutput(WebhookOptions(server.url, secret="k3y", timeout_s=0.5), DiskQueue(tmp_path / "q"), Backoff(0.05, 0.2))
    out.start()
    events = _events("bbwwb-")
    for event in events:
        out.submit(event)
    got = server.wait_for(len(events))
    seqs = []
    for headers, body in got:
        assert headers["X-Tledge-Signature"] == sign("k3y", body)
        record = json.loads(body)
        assert headers["X-Tledge-Event-Id"] == record["id"]
        if record["seq"] not in seqs:  # the timed-out request may have landed too: at least once
            seqs.append(record["seq"])
    assert seqs == [e.seq for e in events]
    summary = out.close(time.monotonic() + 5)
    assert summary["delivered"] == len(events) and summary["retries"] >= 4 and summary["queued"] == 0


def test_webhook_400_is_rejected_and_counted_not_retried(server, tmp_path: Path) -> None:
    server.script.extend([400])
    out = WebhookOutput(WebhookOptions(server.url), DiskQueue(tmp_path / "q"), Backoff(0.05, 0.2))
    out.start()
    events = _events("bw")
    for event in events:
        out.submit(event)
    server.wait_for(len(events) - 1)
    summary = out.close(time.monotonic() + 5)
    assert summary["rejected"] == 1 and summary["delivered"] == len(events) - 1 and "rejected" in summary["line"]


def test_webhook_keeps_one_connection_and_reopens_one_the_server_closed(tmp_path: Path) -> None:
    srv = WebhookServer(keepalive_timeout=0.3)
    try:
        out = WebhookOutput(WebhookOptions(srv.url), DiskQueue(tmp_path / "q"), Backoff(0.05, 0.2))
        out.start()
        events = _events("bwbw")
        for event in events[:3]:
            out.submit(event)
        srv.wait_for(3)
        assert len(set(srv.peers)) == 1 and out.connections == 1  # three posts, one connection
        time.sleep(1.0)  # the server closes the idle connection; the client learns it on the next post
        for event in events[3:]:
            out.submit(event)
        got = srv.wait_for(len(events))
        summary = out.close(time.monotonic() + 5)
    finally:
        srv.close()
    assert [json.loads(body)["seq"] for _, body in got] == [e.seq for e in events]
    assert out.connections == 2 and summary["retries"] == 0 and summary["delivered"] == len(events)


def test_webhook_down_keeps_events_for_the_next_run(tmp_path: Path) -> None:
    from broker import free_port

    url = f"http://127.0.0.1:{free_port()}/hook"
    out = WebhookOutput(WebhookOptions(url), DiskQueue(tmp_path / "q"), Backoff(0.05, 0.2))
    out.start()
    events = _events("bwb")
    for event in events:
        out.submit(event)
    summary = out.close(time.monotonic() + 0.5)
    assert summary["queued"] == len(events) and "next run" in summary["line"]
    again = DiskQueue(tmp_path / "q")
    assert again.recovered == len(events) and again.peek()[1]["seq"] == events[0].seq
    again.close()


@pytest.mark.parametrize("url", ["ftp://x/y", "http://", "localhost:8080", "http://h:0x1/"])
def test_bad_webhook_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(OutputUsageError, match="--webhook"):
        WebhookOptions(url)


def test_unwritable_queue_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(EventOutputError, match="--queue-dir"):
        DiskQueue(blocker / "q")
    first = DiskQueue(tmp_path / "q")
    with pytest.raises(EventOutputError, match="in use by another tledge run"):
        DiskQueue(tmp_path / "q")
    first.close()


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "action.py"
    path.write_text(body)
    return f"{sys.executable} {path}"


def test_exec_gets_fields_in_the_environment_never_in_the_command(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    command = _script(tmp_path, f"import json, os\nopen({str(log)!r}, 'a').write(json.dumps({{k: v for k, v in os.environ.items() if k.startswith('TLEDGE_')}}) + '\\n')\n")
    out = ExecOutput(ExecOptions(command, timeout_s=10))
    out.start()
    tracker = EventTracker(EventOptions(hold=1, device="cam1"))
    (start,) = tracker.feed("$(touch pwned); bees", 0.8, 0, 1000.0)  # a hostile label stays data
    out.submit(start)
    summary = out.close(time.monotonic() + 10)
    assert summary["succeeded"] == 1
    env = json.loads(log.read_text().splitlines()[0])
    assert env["TLEDGE_LABEL"] == "$(touch pwned); bees" and env["TLEDGE_EVENT"] == "start"
    assert json.loads(env["TLEDGE_EVENT_JSON"])["id"] == start.id
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def _until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_hanging_exec_is_terminated_and_busy_label_is_skipped(tmp_path: Path) -> None:
    command = _script(tmp_path, "import os, time\nif os.environ['TLEDGE_LABEL'] == 'bees': time.sleep(60)\n")
    out = ExecOutput(ExecOptions(command, timeout_s=1.5))
    out.start()
    start_bees, end_bees, start_wasps, end_wasps = _events("bw")
    started = time.monotonic()
    out.submit(start_bees)
    out.submit(end_bees)  # bees' command is still running: skipped, counted
    out.submit(start_wasps)  # another label runs beside it
    assert time.monotonic() - started < 0.5  # submit never waits for a command
    _until(lambda: out.succeeded == 1)
    out.submit(end_wasps)
    _until(lambda: out.succeeded == 2 and out.timed_out == 1)
    summary = out.close(time.monotonic() + 5)
    assert (summary["timed_out"], summary["skipped_busy"], summary["succeeded"]) == (1, 1, 2)


def test_failing_exec_is_reported(tmp_path: Path) -> None:
    out = ExecOutput(ExecOptions(_script(tmp_path, "raise SystemExit(3)\n")))
    out.start()
    first, second = _events("b")
    out.submit(first)
    _until(lambda: out.failed == 1)
    out.submit(second)
    _until(lambda: out.failed == 2)
    assert out.close(time.monotonic() + 5)["failed"] == 2
