"""edge.atomic: the target is either old or complete, temporary files never linger."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edge import atomic


def test_write_bytes_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    atomic.write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_write_json_round_trips(tmp_path: Path) -> None:
    target = atomic.write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"b": 1, "a": [1, 2]}
    assert target.read_text().endswith("\n")


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic.write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        target = atomic.write_bytes(tmp_path / "x", b"1", durable=False)
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644
