"""Build the events sink and its outputs from `tledge run`'s options (one place, for the
CLI, the benchmarks and the fleet simulation)."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from edge.errors import OutputUsageError
from edge.events import Event, EventOptions, EventsSink

__all__ = ["JsonEventsOutput", "OutputsConfig", "build_events_sink", "check_outputs", "default_device"]


def default_device() -> str:
    """The host name, reduced to what an MQTT topic level and a folder name allow."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()).strip("-") or "tledge"


@dataclass(frozen=True)
class OutputsConfig:
    """Every event option of `tledge run`. `queue_dir` None: ~/.cache/tledge/queue/DEVICE."""

    device: str
    events_jsonl: bool = False
    mqtt_url: str | None = None
    ha_discovery: bool = False
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_timeout_s: float = 5.0
    exec_command: str | None = None
    exec_timeout_s: float = 10.0
    queue_dir: Path | None = None
    queue_max: int = 10_000  # events per queue
    flush_timeout_s: float = 5.0  # at exit: how long to keep delivering what is queued
    hold: int = 3  # frames
    min_duration_s: float = 0.0
    model_name: str = "tledge model"

    @property
    def wanted(self) -> bool:
        return bool(self.events_jsonl or self.mqtt_url or self.webhook_url or self.exec_command)

    def queue_path(self, output: str) -> Path:
        root = self.queue_dir if self.queue_dir is not None else Path(os.path.expanduser("~/.cache/tledge/queue")) / self.device
        return root / output


class JsonEventsOutput:
    """`--events`: one JSON line per event on stdout (written at once, like the frame lines)."""

    name = "events"

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.written = 0

    def submit(self, event: Event) -> None:
        try:
            self.stream.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
            self.stream.flush()
            self.written += 1
        except BrokenPipeError:
            pass  # the reader went away; the other outputs go on

    def close(self, deadline: float) -> dict[str, Any]:
        return {"written": self.written, "line": ""}


def build_events_sink(config: OutputsConfig, stream: IO[str] | None = None) -> EventsSink | None:
    """The sink and its started outputs, or None when no event output is asked for.

    Raises OutputUsageError (bad URL, rejected credentials), EventOutputError (unusable
    queue folder, missing program) or MissingExtraError; outputs started before the
    failing one are closed again.
    """
    if not config.wanted:
        return None
    options = EventOptions(hold=config.hold, min_duration_s=config.min_duration_s, device=config.device)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", config.device):
        raise OutputUsageError(f"--device {config.device!r}: use letters, digits, _ and - (it names MQTT topics and queue folders)")
    outputs: list[Any] = []
    try:
        if config.events_jsonl:
            outputs.append(JsonEventsOutput(stream))
        if config.exec_command:
            from edge.outputs.exec import ExecOptions, ExecOutput, check_command

            exec_options = ExecOptions(config.exec_command, config.exec_timeout_s)
            check_command(exec_options)
            outputs.append(ExecOutput(exec_options))
            outputs[-1].start()
        if config.webhook_url:
            from edge.outputs.queue import DiskQueue
            from edge.outputs.webhook import WebhookOptions, WebhookOutput

            webhook = WebhookOptions(config.webhook_url, config.webhook_secret, config.webhook_timeout_s)
            outputs.append(WebhookOutput(webhook, DiskQueue(config.queue_path("webhook"), config.queue_max)))
            outputs[-1].start()
        if config.mqtt_url:
            from edge.outputs.mqtt import MqttOptions, MqttOutput, require_paho
            from edge.outputs.queue import DiskQueue

            require_paho()  # the install hint before any folder is made
            mqtt = MqttOptions.from_url(config.mqtt_url, config.device, ha_discovery=config.ha_discovery, model_name=config.model_name)
            output = MqttOutput(mqtt, DiskQueue(config.queue_path("mqtt"), config.queue_max))
            outputs.append(output)
            output.start()
    except BaseException:
        deadline = time.monotonic()
        for output in outputs:
            try:
                output.close(deadline)
            except Exception:
                pass
        raise
    return EventsSink(outputs, options, config.flush_timeout_s)


def check_outputs(config: OutputsConfig) -> None:
    """Usage checks that need no network or folder (URLs), for the CLI's early exit 2."""
    if config.mqtt_url:
        from edge.outputs.mqtt import MqttOptions

        MqttOptions.from_url(config.mqtt_url, config.device)
    if config.webhook_url:
        from edge.outputs.webhook import WebhookOptions

        WebhookOptions(config.webhook_url, config.webhook_secret, config.webhook_timeout_s)
    if config.exec_command:
        from edge.outputs.exec import ExecOptions

        ExecOptions(config.exec_command).argv
