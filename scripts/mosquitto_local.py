"""A local Mosquitto for the event benchmarks and the fleet simulation: the tests' broker
(tests/edge/broker.py) in a temporary folder, on a free loopback port, killed at the end.
Also a recording subscriber."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "edge"))  # the tests' broker, one owner
from broker import MOSQUITTO, Broker, free_port  # noqa: E402

__all__ = ["MOSQUITTO", "LocalBroker", "Recorder", "free_port"]


class LocalBroker:
    """`with LocalBroker() as broker:` -> broker.port; the tests' `Broker` in a temporary
    folder, with a deep queue per client for fleets."""

    def __init__(self) -> None:
        if MOSQUITTO is None:
            raise SystemExit("mosquitto is not installed: apt-get install -y mosquitto")
        self.folder = Path(tempfile.mkdtemp(prefix="tledge-mosquitto-"))
        self.broker = Broker(self.folder, extra=("max_queued_messages 100000",))
        self.port = self.broker.port

    def __enter__(self) -> "LocalBroker":
        try:
            self.broker.start()
        except RuntimeError as exc:
            raise SystemExit(f"mosquitto did not start: {exc}") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        self.broker.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


class Recorder:
    """Subscribes to PREFIX/+/event and keeps (receipt time, event) for every message."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.received: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"recorder-{time.monotonic_ns()}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not ready.wait(10):
            raise SystemExit("the recording subscriber could not subscribe")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        now = time.time()
        with self._lock:
            self.received.append((now, json.loads(message.payload)))

    def snapshot(self) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
