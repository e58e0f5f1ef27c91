"""A local Mosquitto for the event benchmarks and the fleet simulation: a config file in a
temporary folder, a free loopback port, killed at the end. Also a recording subscriber."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalBroker:
    """`with LocalBroker() as broker:` -> broker.port; `max_connections` raised for fleets."""

    def __init__(self) -> None:
        if MOSQUITTO is None:
            raise SystemExit("mosquitto is not installed: apt-get install -y mosquitto")
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="tledge-mosquitto-"))
        (self.folder / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\nuser root\nmax_queued_messages 100000\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "LocalBroker":
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.folder / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise SystemExit("mosquitto did not start")

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
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
