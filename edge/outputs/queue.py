"""A bounded on-disk FIFO of JSON records: at-least-once delivery across outages and restarts.

    DIR/.lock                  held (flock) by the one process using the queue
    DIR/00000000000000000042.json   one record per file, written atomically, oldest first

A record stays on disk until `ack` deletes it, so a crash or Ctrl-C loses nothing that
was accepted: the next run with the same folder delivers it first. The bound
(`max_items`, `max_bytes`) protects the device's storage while a broker is away for
days: records beyond it are refused and counted in `overflowed` (the oldest are kept,
so what is delivered stays in order), never dropped silently. A write that fails (disk
full, folder removed) is counted in `write_failed` and logged. A record is written to
`.NNN.json.tmp` and renamed; temp files a crash left behind never became records and are
deleted when the queue opens (counted in `removed_partial`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from edge.atomic import fsync_dir, write_bytes
from edge.errors import EventOutputError

log = logging.getLogger("tledge.edge")

_SUFFIX = ".json"
_DIGITS = 20


class DiskQueue:
    """Bounded FIFO of JSON records in one folder. Not thread-safe: one worker owns it."""

    def __init__(self, directory: str | os.PathLike[str], max_items: int = 10_000, max_bytes: int = 64 * 1024 * 1024, durable: bool = True) -> None:
        if max_items < 1 or max_bytes < 1:
            raise EventOutputError("the queue bound must allow at least one record")
        self.directory = Path(directory)
        self.max_items, self.max_bytes, self.durable = max_items, max_bytes, durable
        self.overflowed = 0
        self.write_failed = 0
        self._lock_file = self._open_locked()
        self.removed_partial = self._remove_partial()  # only once the lock says no other run writes here
        self._seqs: list[int] = []
        self._sizes: dict[int, int] = {}
        for path in sorted(self.directory.glob("*" + _SUFFIX)):
            if path.stem.isdigit():
                seq = int(path.stem)
                self._seqs.append(seq)
                self._sizes[seq] = path.stat().st_size
        self._next = (self._seqs[-1] + 1) if self._seqs else 0
        self.recovered = len(self._seqs)  # left by an earlier run: delivered first

    def _open_locked(self) -> Any:
        import fcntl

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = open(self.directory / ".lock", "a+")
        except OSError as exc:
            raise EventOutputError(
                f"Cannot use the event queue folder {self.directory}: {exc.strerror or exc}; "
                "pass a writable folder with --queue-dir"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise EventOutputError(
                f"The event queue folder {self.directory} is in use by another tledge run; give each run its own --queue-dir"
            ) from None
        probe = self.directory / ".probe"
        try:
            write_bytes(probe, b"ok", durable=False)
            probe.unlink()
        except OSError as exc:
            handle.close()
            raise EventOutputError(f"The event queue folder {self.directory} is not writable ({exc.strerror or exc}); pass another --queue-dir") from None
        return handle

    def _remove_partial(self) -> int:
        """Delete the temp files of writes a crash interrupted (never renamed: not records)."""
        removed = 0
        for path in self.directory.glob(".*" + _SUFFIX + ".tmp"):
            try:
                path.unlink()
                removed += 1
            except OSError as exc:
                log.warning("event queue %s: cannot remove the partial write %s (%s)", self.directory, path.name, exc.strerror or exc)
        if removed:
            log.info("event queue %s: removed %d partial write(s) left by an interrupted run", self.directory, removed)
        return removed

    def __len__(self) -> int:
        return len(self._seqs)

    @property
    def size_bytes(self) -> int:
        return sum(self._sizes.values())

    def put_many(self, records: list[dict[str, Any]]) -> int:
        """Append `records` in order; each file is fsynced, the folder once for the batch
        (a burst of events costs N + 1 flushes, not 2N). Returns how many were accepted."""
        accepted = sum(self.put(record, sync_folder=False) for record in records)
        if accepted and self.durable:
            try:
                fsync_dir(self.directory)
            except OSError as exc:
                log.warning("event queue %s: cannot flush the folder (%s)", self.directory, exc.strerror or exc)
        return accepted

    def put(self, record: dict[str, Any], sync_folder: bool = True) -> bool:
        """Append `record`; False when it was refused (bound reached) or could not be written."""
        data = json.dumps(record, ensure_ascii=False).encode("utf-8")
        if len(self._seqs) >= self.max_items or self.size_bytes + len(data) > self.max_bytes:
            self.overflowed += 1
            if self.overflowed == 1 or self.overflowed % 100 == 0:
                log.warning("event queue %s is full (%d records): %d event(s) refused so far", self.directory, len(self), self.overflowed)
            return False
        seq = self._next
        try:
            self._write(self.directory / f"{seq:0{_DIGITS}d}{_SUFFIX}", data, sync_folder)
        except OSError as exc:
            self.write_failed += 1
            log.warning("event queue %s: cannot write an event (%s); %d lost so far", self.directory, exc.strerror or exc, self.write_failed)
            return False
        self._next += 1
        self._seqs.append(seq)
        self._sizes[seq] = len(data)
        return True

    def _write(self, path: Path, data: bytes, sync_folder: bool) -> None:
        """Atomic (temp file, rename); with `durable`, the file fsynced before the rename
        and the folder after it unless the caller flushes the folder for a whole batch."""
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                if self.durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self.durable and sync_folder:
            fsync_dir(self.directory)

    def peek(self) -> tuple[int, dict[str, Any]] | None:
        """The oldest record and its number, or None when empty. An unreadable record is
        moved aside (renamed .bad) and counted, so one damaged file cannot block the queue."""
        while self._seqs:
            seq = self._seqs[0]
            path = self.directory / f"{seq:0{_DIGITS}d}{_SUFFIX}"
            try:
                return seq, json.loads(path.read_bytes())
            except (OSError, ValueError) as exc:
                log.warning("event queue: %s is unreadable (%s); moved aside as .bad", path.name, exc)
                self.write_failed += 1
                try:
                    path.rename(path.with_suffix(".bad"))
                except OSError:
                    pass
                self._drop(seq)
        return None

    def ack(self, seq: int) -> None:
        """Delete the record `seq` (delivered, or given up on)."""
        try:
            (self.directory / f"{seq:0{_DIGITS}d}{_SUFFIX}").unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("event queue: cannot delete a delivered event (%s); it may be delivered again", exc.strerror or exc)
        self._drop(seq)

    def _drop(self, seq: int) -> None:
        if self._seqs and self._seqs[0] == seq:
            self._seqs.pop(0)
        elif seq in self._seqs:
            self._seqs.remove(seq)
        self._sizes.pop(seq, None)

    def close(self) -> None:
        """Release the folder for the next run (records stay)."""
        if not self._lock_file.closed:
            self._lock_file.close()
