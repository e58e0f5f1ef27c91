"""`--exec CMD`: run a command per event, event fields in environment variables.

The command line is split like a shell would (shlex) but never run by a shell, and no
event field is ever put into it: labels reach the command only as environment values

    TLEDGE_EVENT (start|end)  TLEDGE_LABEL  TLEDGE_SCORE  TLEDGE_DURATION_S  TLEDGE_FRAME
    TLEDGE_TIME  TLEDGE_DEVICE  TLEDGE_EVENT_ID  TLEDGE_EVENT_JSON (the whole event)

At most one command runs per label: an event for a label whose command is still running
is skipped and counted. A command past `timeout_s` is terminated (its whole process
group), a non-zero exit is reported; neither ever blocks inference, because commands
start and are waited for in their own threads.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from edge.errors import EventOutputError, OutputUsageError
from edge.events import Event

log = logging.getLogger("tledge.edge")


@dataclass(frozen=True)
class ExecOptions:
    command: str
    timeout_s: float = 10.0

    @property
    def argv(self) -> list[str]:
        try:
            argv = shlex.split(self.command)
        except ValueError as exc:
            raise OutputUsageError(f"--exec {self.command!r}: {exc}") from None
        if not argv:
            raise OutputUsageError("--exec needs a command")
        return argv


def event_environment(event: Event) -> dict[str, str]:
    """The TLEDGE_* variables for one event (added to the inherited environment)."""
    return {
        "TLEDGE_EVENT": event.kind.value,
        "TLEDGE_LABEL": event.label,
        "TLEDGE_SCORE": f"{event.score:.6f}",
        "TLEDGE_DURATION_S": f"{event.duration_s:.3f}",
        "TLEDGE_FRAME": str(event.index),
        "TLEDGE_TIME": f"{event.time:.6f}",
        "TLEDGE_DEVICE": event.device,
        "TLEDGE_EVENT_ID": event.id,
        "TLEDGE_EVENT_JSON": json.dumps(event.to_dict(), ensure_ascii=False),
    }


class ExecOutput:
    """Starts the command for each event from a dispatcher thread; one waiter thread per run."""

    name = "exec"

    def __init__(self, options: ExecOptions) -> None:
        self.options = options
        self.argv = options.argv
        self.started = self.succeeded = self.failed = self.timed_out = self.skipped = 0
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._waiters: list[threading.Thread] = []
        self._pending: deque[Event] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._dispatch, name="tledge-exec", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, event: Event) -> None:
        with self._cond:
            self._pending.append(event)
            self._cond.notify_all()

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                event = self._pending.popleft()
            self._launch(event)

    def _launch(self, event: Event) -> None:
        with self._lock:
            busy = self._running.get(event.label)
            if busy is not None and busy.poll() is None:
                self.skipped += 1
                if self.skipped == 1 or self.skipped % 100 == 0:  # counted always, said now and then
                    log.warning("exec: the command for %r is still running; %s event %s skipped (%d so far)",
                                event.label, event.kind.value, event.id, self.skipped)
                return
            try:
                process = subprocess.Popen(
                    self.argv, env={**os.environ, **event_environment(event)}, stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group: a timeout ends its children too
                )
            except OSError as exc:
                self.failed += 1
                log.warning("exec: cannot start %s: %s", self.argv[0], exc.strerror or exc)
                return
            self._running[event.label] = process
            self.started += 1
        waiter = threading.Thread(target=self._wait, args=(process, event), name="tledge-exec-wait", daemon=True)
        # Only live waiters are kept: a device runs for weeks, one command per event.
        self._waiters = [w for w in self._waiters if w.is_alive()]
        self._waiters.append(waiter)
        waiter.start()

    def _wait(self, process: subprocess.Popen[bytes], event: Event) -> None:
        try:
            code = process.wait(self.options.timeout_s)
        except subprocess.TimeoutExpired:
            self._kill(process)
            with self._lock:
                self.timed_out += 1
            log.warning("exec: %s ran past %.1f s for %s event %s; terminated", self.argv[0], self.options.timeout_s, event.label, event.id)
            return
        with self._lock:
            if code == 0:
                self.succeeded += 1
            else:
                self.failed += 1
        if code != 0:
            log.warning("exec: %s exited with %d for %s event %s", self.argv[0], code, event.label, event.id)

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except (ProcessLookupError, PermissionError):
                return
            try:
                process.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue

    def close(self, deadline: float) -> dict[str, Any]:
        """Start what is pending, wait for running commands until `deadline`, then end them."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        for waiter in list(self._waiters):
            waiter.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            still = [p for p in self._running.values() if p.poll() is None]
        for process in still:
            self._kill(process)
        numbers = {"started": self.started, "succeeded": self.succeeded, "failed": self.failed,
                   "timed_out": self.timed_out, "skipped_busy": self.skipped, "ended_at_exit": len(still)}
        line = f"{self.started} command(s) run, {self.failed} failed, {self.timed_out} timed out, {self.skipped} skipped (busy)"
        if still:
            line += f", {len(still)} ended at exit"
        return {**numbers, "line": line}


def check_command(options: ExecOptions) -> None:
    """Fail early when the program cannot be found (rather than at the first event)."""
    import shutil

    program = options.argv[0]
    if os.sep not in program and shutil.which(program) is None:
        raise EventOutputError(f"--exec: {program!r} is not found on PATH; give its full path")
