"""Events to an MQTT broker with paho-mqtt (the `mqtt` extra), Home Assistant discovery.

    --mqtt mqtt[s]://[user[:password]@]host[:port][/prefix]      (password also from
                                                                  TLEDGE_MQTT_PASSWORD)
    PREFIX/DEVICE/event         every start / end event, JSON, QoS 1, in order
    PREFIX/DEVICE/state         the current decision, retained: {"label", "score", "since"}
    PREFIX/DEVICE/availability  "online", and "offline" as the last will (retained)
    HA_PREFIX/sensor/tledge_DEVICE/{label,confidence}/config    with --ha-discovery

At least once: events go through the on-disk queue (worker.py) and are published one
at a time; a record is deleted only after the broker's PUBACK. While the broker is
away, paho reconnects with backoff and the queue holds the events (bounded); a record
whose PUBACK was lost in a disconnect is sent again, so a receiver may see an event
twice (same "id"), never out of order.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from edge.errors import EventOutputError, MissingExtraError, OutputUsageError
from edge.events import Event
from edge.outputs.queue import DiskQueue
from edge.outputs.worker import Backoff, Outcome, QueuedOutput

log = logging.getLogger("tledge.edge")

PASSWORD_ENV = "TLEDGE_MQTT_PASSWORD"
_TOPIC_PART = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*$")
_AUTH_REASONS = (4, 5, 134, 135)  # CONNACK: bad user name or password / not authorized (3.1.1 and 5)


@dataclass(frozen=True)
class MqttOptions:
    """Where and how to publish. Build from a URL with `MqttOptions.from_url`."""

    host: str
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = None
    prefix: str = "tledge"
    device: str = "tledge"
    ha_discovery: bool = False
    ha_prefix: str = "homeassistant"
    model_name: str = "tledge model"
    keepalive_s: int = 30
    ack_timeout_s: float = 10.0  # wait for a PUBACK before sending the record again
    connect_wait_s: float = 3.0  # at start: how long to wait to learn whether credentials work

    @classmethod
    def from_url(cls, url: str, device: str, **kwargs: Any) -> "MqttOptions":
        """Parse `mqtt[s]://[user[:pass]@]host[:port][/prefix]`; bad URLs raise OutputUsageError."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise OutputUsageError(f"--mqtt {url!r}: {exc}; expected mqtt://[user:pass@]host[:port]/prefix") from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise OutputUsageError(f"--mqtt {url!r}: expected mqtt://[user:pass@]host[:port]/prefix (or mqtts:// for TLS)")
        if parts.query or parts.fragment:
            raise OutputUsageError(f"--mqtt {url!r}: a query or fragment has no meaning here; put the topic prefix in the path")
        prefix = parts.path.strip("/") or "tledge"
        if not _TOPIC_PART.match(prefix):
            raise OutputUsageError(f"--mqtt {url!r}: the topic prefix {prefix!r} may hold letters, digits, _, - and /")
        if not _TOPIC_PART.match(device) or "/" in device:
            raise OutputUsageError(f"--device {device!r}: use letters, digits, _ and - (it becomes an MQTT topic level)")
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if username and password is None:
            password = os.environ.get(PASSWORD_ENV)
        tls = parts.scheme == "mqtts"
        return cls(host=parts.hostname, port=port or (8883 if tls else 1883), tls=tls, username=username, password=password,
                   prefix=prefix, device=device, **kwargs)

    def topic(self, leaf: str) -> str:
        return f"{self.prefix}/{self.device}/{leaf}"


def require_paho() -> Any:
    try:
        import paho.mqtt.client as client
    except ModuleNotFoundError:
        raise MissingExtraError("mqtt", "--mqtt") from None
    return client


def discovery_messages(options: MqttOptions) -> list[tuple[str, dict[str, Any]]]:
    """Home Assistant MQTT discovery: a sensor for the label and one for the confidence."""
    node = f"tledge_{options.device}"
    device = {"identifiers": [node], "name": f"tledge {options.device}", "manufacturer": "tledge", "model": options.model_name}
    common = {"state_topic": options.topic("state"), "availability_topic": options.topic("availability"),
              "payload_available": "online", "payload_not_available": "offline", "device": device}
    label = {**common, "name": "Label", "unique_id": f"{node}_label", "value_template": "{{ value_json.label }}", "icon": "mdi:eye"}
    confidence = {**common, "name": "Confidence", "unique_id": f"{node}_confidence", "unit_of_measurement": "%",
                  "state_class": "measurement", "value_template": "{{ (value_json.score * 100) | round(1) }}"}
    return [(f"{options.ha_prefix}/sensor/{node}/label/config", label), (f"{options.ha_prefix}/sensor/{node}/confidence/config", confidence)]


def state_of(record: dict[str, Any]) -> dict[str, Any]:
    """The retained state after an event: the class that started, or unknown after an end."""
    if record["event"] == "start":
        return {"label": record["label"], "score": record["score"], "since": record["start_time"], "event_id": record["id"]}
    return {"label": "unknown", "score": 0.0, "since": record["time"], "event_id": record["id"]}


class MqttOutput(QueuedOutput):
    """Publishes events through a paho client whose network loop runs in its own thread."""

    name = "mqtt"

    def __init__(self, options: MqttOptions, queue: DiskQueue, backoff: Backoff = Backoff()) -> None:
        super().__init__(queue, backoff)
        self.options = options
        self._connected = threading.Event()
        self._first_answer = threading.Event()
        self._auth_error: str | None = None
        self._state: dict[str, Any] | None = None
        self._closing = False  # our own disconnect is not worth a warning
        mqtt = require_paho()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"tledge-{options.device}", clean_session=True)
        if options.username:
            self.client.username_pw_set(options.username, options.password)
        if options.tls:
            self.client.tls_set()
        self.client.will_set(options.topic("availability"), "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail

    # -- paho callbacks (paho's network thread) --------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            if int(reason.value) in _AUTH_REASONS:
                self._auth_error = str(reason)
                log.warning("mqtt: %s:%d refused the connection: %s", self.options.host, self.options.port, reason)
            self._first_answer.set()
            return
        if self._auth_error is not None:
            log.warning("mqtt: connected to %s:%d again", self.options.host, self.options.port)
        self._auth_error = None
        client.publish(self.options.topic("availability"), "online", qos=1, retain=True)
        if self.options.ha_discovery:
            for topic, payload in discovery_messages(self.options):
                client.publish(topic, json.dumps(payload), qos=1, retain=True)
        if self._state is not None:
            client.publish(self.options.topic("state"), json.dumps(self._state), qos=1, retain=True)
        self._connected.set()
        self._first_answer.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._connected.is_set() and not self._closing:
            log.warning("mqtt: lost %s:%d (%s); events are queued on disk until it is back", self.options.host, self.options.port, reason)
        self._connected.clear()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._first_answer.set()

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background; wrong credentials are an error, an absent broker is not."""
        opts = self.options
        try:
            self.client.connect_async(opts.host, opts.port, keepalive=opts.keepalive_s)
        except (OSError, ValueError) as exc:
            raise EventOutputError(f"mqtt: cannot connect to {opts.host}:{opts.port}: {exc}") from None
        self.client.loop_start()
        self._first_answer.wait(opts.connect_wait_s)
        if self._auth_error is not None:
            self.client.loop_stop()
            self.queue.close()
            raise OutputUsageError(
                f"The MQTT broker at {opts.host}:{opts.port} refused the credentials ({self._auth_error}); "
                f"check the user and password in --mqtt (or {PASSWORD_ENV})"
            )
        if not self._connected.is_set():
            log.warning("mqtt: broker %s:%d is not reachable yet; events are queued in %s until it is", opts.host, opts.port, self.queue.directory)
        if self.queue.recovered:
            log.info("mqtt: %d event(s) left by an earlier run are delivered first", self.queue.recovered)
        super().start()

    def deliver(self, record: dict[str, Any], deadline: float | None) -> Outcome:
        if not self._connected.is_set():
            return Outcome.RETRY
        info = self.client.publish(self.options.topic("event"), json.dumps(record, ensure_ascii=False), qos=1)
        limit = time.monotonic() + self.options.ack_timeout_s
        if deadline is not None:
            limit = min(limit, deadline)
        try:
            info.wait_for_publish(max(0.0, limit - time.monotonic()))  # PUBACK arrives on paho's thread
        except (RuntimeError, ValueError):  # not queued: the connection dropped meanwhile
            return Outcome.RETRY
        if not info.is_published():
            return Outcome.RETRY
        self._state = state_of(record)
        self.client.publish(self.options.topic("state"), json.dumps(self._state), qos=1, retain=True)
        return Outcome.DELIVERED

    def on_closed(self) -> None:
        self._closing = True
        if self._connected.is_set():
            info = self.client.publish(self.options.topic("availability"), "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(1.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
