"""The delivery thread shared by MQTT and webhooks: memory hand-off -> disk queue -> send.

    camera loop --submit()--> deque (memory, instant) --worker--> DiskQueue --deliver()--> network

`submit` only appends to a deque, so a slow disk or an absent broker never stalls the
inference loop. The worker writes each event to the queue, then delivers the oldest
record, one at a time (order kept): `Outcome.DELIVERED` deletes it, `RETRY` waits with
exponential backoff and tries the same record again, `REJECTED` (the receiver refused
it for good, e.g. HTTP 400) deletes and counts it. `close(deadline)` keeps delivering
until the queue is empty or the deadline passes; what is left stays on disk for the
next run and is reported.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

from edge.events import Event
from edge.outputs.queue import DiskQueue

log = logging.getLogger("tledge.edge")


class Outcome(str, Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Backoff:
    """Waits between retries of one record: initial, doubled, capped (seconds)."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def delay(self, failures: int) -> float:
        return min(self.max_s, self.initial_s * (2 ** max(0, failures - 1)))


class QueuedOutput:
    """Base of the at-least-once outputs; subclasses implement `deliver(record)`."""

    name = "output"

    def __init__(self, queue: DiskQueue, backoff: Backoff = Backoff()) -> None:
        self.queue = queue
        self.backoff = backoff
        self.submitted = self.delivered = self.rejected = self.retries = 0
        self._pending: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._deadline: float | None = None  # set by close(): time.monotonic() to give up at
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"tledge-{self.name}", daemon=True)
        self._thread.start()

    # -- called on the inference loop's thread ---------------------------------------------
    def submit(self, event: Event) -> None:
        """Hand `event` over; returns at once."""
        with self._cond:
            self._pending.append(event.to_dict())
            self.submitted += 1
            self._cond.notify_all()

    # -- to implement ----------------------------------------------------------------------
    def deliver(self, record: dict[str, Any], deadline: float | None) -> Outcome:
        """Send one record; must return by `deadline` (time.monotonic()) when one is set."""
        raise NotImplementedError

    def on_closed(self) -> None:
        """Release connections (after the worker stopped)."""

    # -- the worker ------------------------------------------------------------------------
    def _persist_pending(self) -> None:
        """Move what `submit` handed over onto disk. Records leave the deque only once
        written, so the summary never loses sight of one caught in between."""
        with self._cond:
            batch = list(self._pending)
        if not batch:
            return
        self.queue.put_many(batch)
        with self._cond:
            for _ in batch:
                self._pending.popleft()

    def _expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking early for a new event or close()."""
        with self._cond:
            if self._deadline is not None:
                seconds = min(seconds, max(0.0, self._deadline - time.monotonic()))
            if not self._pending and seconds > 0:
                self._cond.wait(seconds)

    def _run(self) -> None:
        failures = 0
        while True:
            self._persist_pending()
            head = self.queue.peek()
            if head is None:
                with self._cond:
                    if self._deadline is not None and not self._pending:
                        return
                self._wait(1.0)
                continue
            if self._expired():
                return
            seq, record = head
            try:
                outcome = self.deliver(record, self._deadline)
            except Exception as exc:  # a bug in one output must not kill its thread silently
                log.warning("%s: delivering %s failed: %s", self.name, record.get("id"), exc)
                outcome = Outcome.RETRY
            if outcome is Outcome.RETRY:
                failures += 1
                self.retries += 1
                self._wait(self.backoff.delay(failures))
                continue
            failures = 0
            self.queue.ack(seq)
            if outcome is Outcome.DELIVERED:
                self.delivered += 1
            else:
                self.rejected += 1

    def close(self, deadline: float) -> dict[str, Any]:
        """Deliver what is queued until `deadline` (time.monotonic()), then stop; the summary."""
        with self._cond:
            self._deadline = deadline
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()) + 2.0)
        if self._thread is None or not self._thread.is_alive():
            self._persist_pending()  # nothing accepted stays only in memory
        try:
            self.on_closed()
        finally:
            self.queue.close()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        unsaved = len(self._pending)  # only when close() gave up on a worker still writing
        left = len(self.queue)
        numbers = {
            "submitted": self.submitted,
            "delivered": self.delivered,
            "rejected": self.rejected,
            "retries": self.retries,
            "queued": left,
            "unsaved": unsaved,
            "overflowed": self.queue.overflowed,
            "write_failed": self.queue.write_failed,
            "queue_dir": str(self.queue.directory),
        }
        line = f"{self.delivered} event(s) delivered"
        if left:
            line += f", {left} still queued in {self.queue.directory} (sent first by the next run)"
        if self.queue.overflowed:
            line += f", {self.queue.overflowed} refused by the full queue"
        if self.rejected:
            line += f", {self.rejected} rejected by the receiver"
        if unsaved:
            line += f", {unsaved} never reached the disk queue and are lost (the disk was too slow before the deadline)"
        if self.queue.write_failed:
            line += f", {self.queue.write_failed} lost to queue write errors"
        return {**numbers, "line": line}
