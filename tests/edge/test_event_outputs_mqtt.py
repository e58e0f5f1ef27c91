"""Events to a REAL Mosquitto broker (edge/outputs/mqtt.py): delivery, order, retained
state, availability with a last will, Home Assistant discovery, and the faults of issue
14: broker down at start, killed and restarted mid-run, wrong credentials, full queue."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from broker import MOSQUITTO, SKIP_REASON, Broker, Subscriber, free_port, unique_in_order
from edge.errors import OutputUsageError
from edge.events import EventOptions, EventTracker
from edge.outputs.mqtt import MqttOptions, MqttOutput
from edge.outputs.queue import DiskQueue
from edge.outputs.worker import Backoff

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason=SKIP_REASON)
pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'tledge[mqtt]')")


def _events(count: int, device: str = "cam1"):
    """`count` real events from the tracker: bees and wasps alternating, hold 1."""
    tracker = EventTracker(EventOptions(hold=1, device=device))
    out = []
    for i in range(count):
        out += tracker.feed("bees" if i % 2 == 0 else "wasps", 0.9, i, 1000.0 + i)
    out += tracker.finish(count, 1000.0 + count)
    return out


def _output(port: int, queue: Path, **kwargs) -> MqttOutput:
    options = MqttOptions.from_url(f"mqtt://127.0.0.1:{port}/t", "cam1", connect_wait_s=1.0, **kwargs)
    return MqttOutput(options, DiskQueue(queue), Backoff(0.1, 0.5))


def test_events_state_availability_and_discovery(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "b").start()
    try:
        sub = Subscriber(broker.port)
        out = _output(broker.port, tmp_path / "q", ha_discovery=True)
        out.start()
        events = _events(6)
        for event in events:
            out.submit(event)
        got = sub.wait_for("/event", len(events))
        assert unique_in_order(got) == [e.seq for e in events]
        assert got[0].json()["label"] == "bees" and got[0].json()["event"] == "start"
        config = {m.topic: m.json() for m in sub.on("/config")}
        label_cfg = config["homeassistant/sensor/tledge_cam1/label/config"]
        assert label_cfg["state_topic"] == "t/cam1/state" and label_cfg["availability_topic"] == "t/cam1/availability"
        assert "confidence" in " ".join(config)
        summary = out.close(time.monotonic() + 5)
        assert summary["delivered"] == len(events) and summary["queued"] == 0
        # A late subscriber sees the retained state (unknown after the last end) and "offline".
        late = Subscriber(broker.port, "t/cam1/#")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (late.on("/state") and late.on("/availability")):
            time.sleep(0.05)
        assert late.on("/state")[-1].json()["label"] == "unknown" and late.on("/state")[-1].retain
        assert late.on("/availability")[-1].payload == b"offline"
        late.close()
        sub.close()
    finally:
        broker.kill()


def test_broker_down_at_start_then_up_delivers_everything_in_order(tmp_path: Path) -> None:
    port = free_port()
    out = _output(port, tmp_path / "q")
    out.start()  # nobody listens: a warning, not an error
    events = _events(8)
    for event in events:
        out.submit(event)
    time.sleep(0.5)
    assert len(out.queue) == len(events)  # on disk, waiting
    broker = Broker(tmp_path / "b", port=port)
    sub = None
    try:
        broker.start()
        sub = Subscriber(port)
        got = sub.wait_for("/event", len(events), timeout=40)
        assert unique_in_order(got) == [e.seq for e in events]
        assert out.close(time.monotonic() + 5)["delivered"] == len(events)
    finally:
        if sub:
            sub.close()
        broker.kill()


def test_broker_killed_and_restarted_mid_run_loses_nothing(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "b").start()
    sub = Subscriber(broker.port)
    out = _output(broker.port, tmp_path / "q")
    out.start()
    events = _events(20)
    try:
        for event in events[:10]:
            out.submit(event)
        first = sub.wait_for("/event", 10)
        sub.close()
        broker.kill()  # SIGKILL: no goodbye to anyone
        for event in events[10:]:
            out.submit(event)
        time.sleep(1.0)
        broker.start()  # same port, same config, empty (no persistence)
        sub = Subscriber(broker.port)
        rest = sub.wait_for("/event", len(events) - 10, timeout=40)
        assert unique_in_order(first + rest) == [e.seq for e in events]
        assert out.close(time.monotonic() + 5)["queued"] == 0
    finally:
        sub.close()
        broker.kill()


def test_wrong_credentials_are_a_usage_error(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "b", users={"cam": "right"}).start()
    try:
        options = MqttOptions.from_url(f"mqtt://cam:wrong@127.0.0.1:{broker.port}/t", "cam1")
        with pytest.raises(OutputUsageError, match="refused the credentials"):
            MqttOutput(options, DiskQueue(tmp_path / "q")).start()
        good = MqttOutput(MqttOptions.from_url(f"mqtt://cam:right@127.0.0.1:{broker.port}/t", "cam1"), DiskQueue(tmp_path / "q2"))
        good.start()
        sub = Subscriber(broker.port, username="cam", password="right")
        for event in _events(2):
            good.submit(event)
        assert len(sub.wait_for("/event", 3)) >= 3
        good.close(time.monotonic() + 5)
        sub.close()
    finally:
        broker.kill()


def test_password_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("TLEDGE_MQTT_PASSWORD", "s3cret")
    options = MqttOptions.from_url("mqtts://cam@broker.local/home/bees", "door")
    assert (options.password, options.port, options.tls, options.topic("event")) == ("s3cret", 8883, True, "home/bees/door/event")


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "mqtt://", "mqtt://host:99999/x", "mqtt://host/a b", "mqtt://host/x?retain=1"])
def test_malformed_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(OutputUsageError, match="--mqtt"):
        MqttOptions.from_url(url, "cam1")


def test_full_queue_counts_what_it_refuses(tmp_path: Path) -> None:
    out = MqttOutput(MqttOptions.from_url(f"mqtt://127.0.0.1:{free_port()}/t", "cam1", connect_wait_s=0.5), DiskQueue(tmp_path / "q", max_items=5))
    out.start()
    for event in _events(11):
        out.submit(event)
    summary = out.close(time.monotonic() + 0.5)
    assert summary["queued"] == 5 and summary["overflowed"] == len(_events(11)) - 5
    assert "refused by the full queue" in summary["line"]
    assert len(list((tmp_path / "q").glob("*.json"))) == 5  # kept for the next run
