"""Atomic file writes: the one helper every writer in tledge uses.

A reader (a device watching a folder, a second tledge process, a user after a power cut)
sees either the old file or the complete new one, never a partial write: the data goes to
a temporary file in the same folder, is flushed and fsync'ed, then `os.replace`d onto the
target, and the folder is fsync'ed so the rename itself survives a power cut. A failure
at any point removes the temporary file and leaves the target as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def umask_mode(base: int) -> int:
    """`base` with the process umask applied: what `open()` would have created. mkstemp
    makes files 0600, which a device service running as another user could not read."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot
    be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> Path:
    """Write `data` to `path` atomically; returns the path. `durable=False` skips the
    fsyncs (caches that can be recomputed), never the atomic rename."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, umask_mode(0o666))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(target.parent)
    return target


def write_text(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"), durable=durable)


def write_json(path: str | os.PathLike[str], value: Any, *, durable: bool = True) -> Path:
    """Write `value` as indented JSON (with a final newline) to `path` atomically. Text is
    kept readable (UTF-8); a file name that is not UTF-8 (surrogates) makes it \\u-escape,
    which reads back to the very same name."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    try:
        data = (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        data = (json.dumps(value, indent=2, ensure_ascii=True) + "\n").encode("ascii")
    return write_bytes(path, data, durable=durable)
