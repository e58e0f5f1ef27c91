"""What a killed export leaves beside the target is tidied by the next one."""

from __future__ import annotations

import os
import time
from pathlib import Path

from trainer.export.bundle_writer import BundleStaging, recover_interrupted, remove_stale


def _old_bundle(parent: Path, name: str) -> Path:
    aside = parent / f".{name}.old-abc123"
    (aside / "bundle").mkdir(parents=True)
    (aside / "bundle" / "model.tflite").write_bytes(b"old model")
    return aside


def test_a_force_export_killed_between_its_renames_gets_the_old_bundle_back(tmp_path: Path) -> None:
    aside = _old_bundle(tmp_path, "clothing")
    recover_interrupted(tmp_path / "clothing")
    assert (tmp_path / "clothing" / "model.tflite").read_bytes() == b"old model"
    assert not aside.exists()


def test_an_aside_copy_is_dropped_once_the_new_bundle_is_in_place(tmp_path: Path) -> None:
    (tmp_path / "clothing").mkdir()
    (tmp_path / "clothing" / "model.tflite").write_bytes(b"new model")
    aside = _old_bundle(tmp_path, "clothing")
    recover_interrupted(tmp_path / "clothing")
    assert (tmp_path / "clothing" / "model.tflite").read_bytes() == b"new model"
    assert not aside.exists()


def test_only_stale_staging_folders_are_removed(tmp_path: Path) -> None:
    stale, fresh = tmp_path / ".x.partial-old", tmp_path / ".x.partial-new"
    stale.mkdir()
    fresh.mkdir()
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    assert remove_stale(tmp_path, ".x.partial-*") == [stale]
    assert fresh.exists() and not stale.exists()


def test_staging_tidies_before_checking_the_target(tmp_path: Path) -> None:
    _old_bundle(tmp_path, "clothing")
    target = tmp_path / "clothing"
    with BundleStaging(target, force=True) as stage:
        stage.write("model.tflite", b"newer model")
        stage.commit()
    assert (target / "model.tflite").read_bytes() == b"newer model"
    assert not list(tmp_path.glob(".clothing.*"))
