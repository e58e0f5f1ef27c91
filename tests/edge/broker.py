"""A real Mosquitto broker for the tests, on a free loopback port, with a config file
written by the test; and a paho subscriber that records what the broker delivers."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
SKIP_REASON = "mosquitto is not installed (Debian: apt-get install mosquitto; scripts/test.sh installs it)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto -c CONF on 127.0.0.1:port; `users` makes a password file (no anonymous);
    `extra`: more config lines (e.g. "max_queued_messages 100000")."""

    def __init__(self, folder: Path, port: int | None = None, users: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> None:
        self.folder, self.port = folder, port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        # As root, mosquitto would switch to the "mosquitto" user, who cannot read pytest's
        # 0700 temporary folders; the option is ignored when not started as root.
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest none", "user root"]
        if users:
            passwd = folder / "passwd"
            for i, (user, password) in enumerate(users.items()):
                flags = ["-b", "-c"] if i == 0 else ["-b"]
                subprocess.run(["mosquitto_passwd", *flags, str(passwd), user, password], check=True, capture_output=True)
            passwd.chmod(0o644)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join([*lines, *extra]) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "Broker":
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float = field(default_factory=time.time)

    def json(self) -> dict:
        return json.loads(self.payload)


class Subscriber:
    """Subscribes to '#' and records every message (with its arrival time)."""

    def __init__(self, port: int, topic: str = "#", username: str | None = None, password: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}-{time.monotonic_ns()}")
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, u, f, rc, p: (c.subscribe(topic, qos=1), None)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._ready.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("test subscriber could not subscribe")

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append(Received(message.topic, bytes(message.payload), bool(message.retain)))

    def on(self, suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(self, suffix: str, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.on(suffix)
            if len({m.json()["id"] for m in found} if suffix.endswith("event") else found) >= count:
                return found
            time.sleep(0.05)
        return self.on(suffix)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def unique_in_order(messages: list[Received]) -> list[int]:
    """Event seqs in arrival order, a repeated delivery (at least once) counted once."""
    seen, out = set(), []
    for m in messages:
        event = m.json()
        if event["id"] not in seen:
            seen.add(event["id"])
            out.append(event["seq"])
    return out
