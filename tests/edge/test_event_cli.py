"""`tledge run` with event outputs, end to end in real processes: a real Mosquitto, a
real aiohttp webhook receiver, a real command; usage errors; Ctrl-C with events queued."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker import MOSQUITTO, SKIP_REASON, Broker, Subscriber, free_port, unique_in_order

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'tledge[mqtt]')")
needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason=SKIP_REASON)
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def tledge(*args, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "edge.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


@needs_broker
def test_one_run_feeds_json_events_mqtt_webhook_and_exec_alike(colour_bundle, colour_video, tmp_path: Path) -> None:
    from webhook_server import WebhookServer

    broker = Broker(tmp_path / "b").start()
    server = WebhookServer()
    sub = Subscriber(broker.port)
    log = tmp_path / "exec.log"
    action = tmp_path / "action.py"
    action.write_text(f"import os\nopen({str(log)!r}, 'a').write(os.environ['TLEDGE_EVENT'] + ' ' + os.environ['TLEDGE_LABEL'] + '\\n')\n")
    try:
        result = tledge(
            "run", colour_bundle, "--source", colour_video[0], "--display", "off", "--events", "--hold", "2",
            "--device", "door", "--mqtt", f"{broker.url}/home", "--ha-discovery", "--webhook", server.url,
            "--webhook-secret", "k", "--exec", f"{sys.executable} {action}", "--queue-dir", tmp_path / "q",
        )
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in result.stdout.splitlines()]
        labels = [(e["event"], e["label"]) for e in events]
        # The video: 8 frames each of red, green, blue, gray -> 4 starts and 4 ends.
        assert [l for k, l in labels if k == "start"] == ["red", "green", "blue", "gray"] and len(events) == 8
        assert events[0]["start_index"] == 0 and events[-1]["reason"] == "end_of_input"
        mqtt = sub.wait_for("home/door/event", len(events))
        assert unique_in_order(mqtt) == [e["seq"] for e in events]
        assert [json.loads(body)["id"] for _, body in server.wait_for(len(events))] == [e["id"] for e in events]
        assert sub.on("homeassistant/sensor/tledge_door/label/config")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(log.read_text().splitlines() if log.exists() else []) < 4:
            time.sleep(0.05)
        # Commands for different labels run side by side: their own writes may interleave.
        assert sorted(line.split()[1] for line in log.read_text().splitlines() if line.startswith("start")) == ["blue", "gray", "green", "red"]
        assert "mqtt: 8 event(s) delivered" in result.stderr and "webhook: 8 event(s) delivered" in result.stderr
    finally:
        sub.close()
        server.close()
        broker.kill()


@needs_broker
def test_wrong_credentials_exit_2_without_a_traceback(colour_bundle, colour_video, tmp_path: Path) -> None:
    broker = Broker(tmp_path / "b", users={"cam": "right"}).start()
    try:
        result = tledge("run", colour_bundle, "--source", colour_video[0], "--display", "off",
                        "--mqtt", f"mqtt://cam:wrong@127.0.0.1:{broker.port}/t", "--queue-dir", tmp_path / "q")
        assert result.returncode == 2 and "refused the credentials" in result.stderr and "Traceback" not in result.stderr
    finally:
        broker.kill()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--mqtt", "mqtt//nohost"], 2, "--mqtt"),
        (["--webhook", "ftp://x/y"], 2, "--webhook"),
        (["--exec", "'unclosed"], 2, "--exec"),
        (["--threshold", "moths=0.5"], 2, "no class 'moths'"),
        (["--device", "a/b", "--events"], 2, "--device"),
        (["--webhook", "http://127.0.0.1:9/x", "--queue-dir", "QUEUE_IS_A_FILE"], 1, "--queue-dir"),
        (["--exec", "no-such-program-tledge"], 1, "not found on PATH"),
    ],
)
def test_bad_event_options_are_clear_errors(colour_bundle, colour_video, tmp_path: Path, args, code, message) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = [str(blocker / "q") if a == "QUEUE_IS_A_FILE" else a for a in args]
    result = tledge("run", colour_bundle, "--source", colour_video[0], "--display", "off", *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


@needs_broker
def test_ctrl_c_with_the_broker_down_flushes_within_the_bound_and_the_next_run_delivers(colour_bundle, colour_video, tmp_path: Path) -> None:
    port = free_port()
    queue = tmp_path / "q"
    cmd = [sys.executable, "-m", "edge.cli", "run", str(colour_bundle), "--source", str(colour_video[0]), "--loop", "--realtime",
           "--display", "off", "--events", "--hold", "2", "--device", "door", "--mqtt", f"mqtt://127.0.0.1:{port}/t",
           "--queue-dir", str(queue), "--flush-timeout", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        seen = [json.loads(proc.stdout.readline()) for _ in range(3)]  # three events happened
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - started < 15  # flush bound 1 s + shutdown, not a hang
    assert proc.returncode in (0, 130), err
    assert "still queued in" in err and "Traceback" not in err
    rest = [json.loads(line) for line in out.splitlines()]
    assert rest and rest[-1]["event"] == "end" and rest[-1]["reason"] == "interrupted"  # Ctrl-C, said in the last event
    queued = sorted(queue.joinpath("mqtt").glob("*.json"))
    assert len(queued) >= len(seen)
    # The broker comes back: the next run delivers the queued events first, in order.
    broker = Broker(tmp_path / "b", port=port).start()
    sub = Subscriber(port)
    try:
        again = tledge("run", colour_bundle, "--source", colour_video[0], "--display", "off", "--max-frames", "1",
                       "--device", "door", "--mqtt", f"mqtt://127.0.0.1:{port}/t", "--queue-dir", queue, "--json")
        assert again.returncode == 0, again.stderr
        got = sub.wait_for("t/door/event", len(queued))
        assert [m.json()["id"] for m in got][: len(seen)] == [e["id"] for e in seen]
        assert unique_in_order(got)[: len(queued)] == sorted(unique_in_order(got)[: len(queued)])
    finally:
        sub.close()
        broker.kill()


def test_predict_and_run_honour_thresholds_with_unknown_as_a_label(colour_bundle, colour_video, tmp_path: Path) -> None:
    import cv2

    png = tmp_path / "gray.png"
    cv2.imwrite(str(png), (128 * __import__("numpy").ones((40, 40, 3))).astype("uint8"))
    result = tledge("predict", colour_bundle, png, "--json", "--threshold", "1.0")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["label"] == "unknown"
    result = tledge("run", colour_bundle, "--source", colour_video[0], "--display", "off", "--threshold", "1.0", "--threshold", "red=0.2")
    labels = {json.loads(line)["label"] for line in result.stdout.splitlines()}
    assert labels == {"red", "unknown"}


@needs_broker
def test_a_device_that_dies_goes_offline_through_its_last_will(colour_bundle, colour_video, tmp_path: Path) -> None:
    broker = Broker(tmp_path / "b").start()
    sub = Subscriber(broker.port, "t/door/availability")
    cmd = [sys.executable, "-m", "edge.cli", "run", str(colour_bundle), "--source", str(colour_video[0]), "--loop", "--realtime",
           "--display", "off", "--events", "--device", "door", "--mqtt", f"{broker.url}/t", "--queue-dir", str(tmp_path / "q")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    try:
        proc.stdout.readline()  # running: an event came out
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not sub.on("availability"):
            time.sleep(0.05)
        assert sub.on("availability")[-1].payload == b"online"
        proc.kill()  # no goodbye: only the broker's last will can say it
        proc.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sub.on("availability")[-1].payload != b"offline":
            time.sleep(0.05)
        assert sub.on("availability")[-1].payload == b"offline"
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
        broker.kill()
