"""trainer.run_dir: the run folder's one writer and one validated reader."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge.preprocess import ResizePolicy
from trainer.errors import RunDirError
from trainer.run_dir import RunRecord, read_run, write_run


def _run_dir(tmp_path: Path, run: dict | None = None, splits: dict | None = None) -> Path:
    """A run folder in the old (format 1) layout: split paths as written."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.keras").write_bytes(b"")
    base = {"name": "r", "labels": ["a", "b"], "image_size": [32, 32], "resize": "center_crop", "backbone": {}}
    (run_dir / "run.json").write_text(json.dumps({**base, **(run or {})}), encoding="utf-8")
    (run_dir / "splits.json").write_text(json.dumps(splits or {"train": [["x.png", 0]], "val": [], "test": [["y.png", 1]]}))
    return run_dir


def test_read_run_reads_the_contract(tmp_path: Path) -> None:
    run = read_run(_run_dir(tmp_path))
    assert run.name == "r" and run.labels == ("a", "b") and run.image_size == (32, 32)
    assert run.resize is ResizePolicy.CENTER_CROP and run.data_root is None
    assert run.splits["train"] == [("x.png", 0)] and run.splits["val"] == []  # format 1: as recorded


@pytest.mark.parametrize(
    "run, splits, match",
    [
        ({"labels": ["a", "a"]}, None, "duplicate"),
        ({"labels": ["a", "b\nc"]}, None, "line break"),
        ({"labels": []}, None, "labels"),
        ({"image_size": "big"}, None, "image_size"),
        ({"resize": "squash"}, None, "resize"),
        (None, {"train": [["x.png", 5]]}, "class index 5"),
        (None, {"train": [["x.png"]]}, "malformed"),
        (None, {"format": 2, "train": [["x.png", 0]]}, "data_root"),
    ],
)
def test_read_run_rejects_broken_runs(tmp_path: Path, run: dict | None, splits: dict | None, match: str) -> None:
    with pytest.raises(RunDirError, match=match):
        read_run(_run_dir(tmp_path, run, splits))


def test_read_run_names_missing_files(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not found"):
        read_run(tmp_path / "nope")
    run_dir = _run_dir(tmp_path)
    os.remove(run_dir / "splits.json")
    with pytest.raises(RunDirError, match="splits.json is missing"):
        read_run(run_dir)
    (run_dir / "splits.json").write_text("{")
    with pytest.raises(RunDirError, match="Cannot read"):
        read_run(run_dir)
    (run_dir / "splits.json").write_text('{"train": []}')
    os.remove(run_dir / "model.keras")
    with pytest.raises(RunDirError, match="model.keras is missing"):
        read_run(run_dir)


def _record(data: Path) -> RunRecord:
    images = sorted(data.rglob("*.png"))
    return RunRecord(
        name="moving", labels=("a", "b"), image_size=32, resize=ResizePolicy.CENTER_CROP, backbone={"name": "mobilenet_v2"},
        options={}, seed=0, created=datetime(2026, 1, 1, tzinfo=timezone.utc), version="test", data_root=data,
        splits={"train": [(images[0], 0), (images[1], 1)], "val": [(images[2], 0)], "test": [(images[3], 1)]},
        data_report={}, metrics={}, history=[{"stage": "head", "epoch": 1, "loss": 0.5}], summary={"name": "moving"},
    )


@pytest.fixture
def written_run(tmp_path: Path) -> tuple[Path, Path]:
    """(run folder, data folder): a run written by `write_run` over four tiny files."""
    data = tmp_path / "data"
    for i, cls in enumerate("aabb"):
        (data / cls).mkdir(parents=True, exist_ok=True)
        (data / cls / f"{i}.png").write_bytes(b"not decoded here")
    run_dir, summary = write_run(tmp_path / "runs", _record(data), lambda path: path.write_bytes(b"model"), started=0.0)
    assert summary["run_dir"] == str(run_dir) and summary["wall_s"] >= 0
    return run_dir, data


def test_splits_are_stored_relative_to_the_data_root_recorded_once(written_run: tuple[Path, Path]) -> None:
    run_dir, data = written_run
    raw = json.loads((run_dir / "splits.json").read_text())
    assert raw["format"] == 2 and raw["data_root"] == str(data)
    assert all(not Path(p).is_absolute() for s in ("train", "val", "test") for p, _ in raw[s])
    assert [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]  # no partial folder left
    run = read_run(run_dir)
    assert run.data_root == data and all(Path(p).is_file() and Path(p).is_absolute() for p, _ in run.splits["train"])


def test_a_moved_run_folder_still_finds_its_data(written_run: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, data = written_run
    moved = shutil.move(str(run_dir), tmp_path / "elsewhere" / "run")
    run = read_run(moved)
    assert [Path(p) for p, _ in run.splits["test"]] == sorted(data.rglob("*.png"))[3:]


def test_missing_data_names_the_root_and_data_that_moved_can_be_pointed_at(written_run: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, data = written_run
    moved_data = tmp_path / "other-machine" / "photos"
    moved_data.parent.mkdir()
    shutil.move(str(data), moved_data)
    with pytest.raises(RunDirError, match=f"data folder {data} does not exist.*--data-root"):
        read_run(run_dir)
    run = read_run(run_dir, data_root=moved_data)
    assert run.data_root == moved_data and all(Path(p).is_file() for p, _ in run.splits["train"])
    (tmp_path / "wrong").mkdir()
    with pytest.raises(RunDirError, match=r"None of the 4 images .* is under .*wrong.*first: .*0\.png"):
        read_run(run_dir, data_root=tmp_path / "wrong")


def _record_with_pictures(data: Path) -> RunRecord:
    import dataclasses

    matrix = {"confusion_matrix": [[3, 1], [0, 4]]}
    history = [{"stage": "head", "epoch": e, "loss": 1.0 / e, "accuracy": 0.5 + e / 10, "val_loss": 1.2 / e, "val_accuracy": 0.4 + e / 10} for e in (1, 2, 3)]
    return dataclasses.replace(_record(data), metrics={"val": matrix, "test": matrix}, history=history)


@pytest.mark.parametrize("process", ["works", "cannot start"])
def test_the_pictures_are_drawn_in_a_process_of_their_own_else_here(tmp_path: Path, monkeypatch, process: str) -> None:
    """The same pictures either way: drawn by `python -m trainer.plots` while the model is
    saved (this process never imports matplotlib), or here when that process cannot run."""
    import sys

    import trainer.run_dir as run_dir_module

    data = tmp_path / "data"
    for i, cls in enumerate("aabb"):
        (data / cls).mkdir(parents=True, exist_ok=True)
        (data / cls / f"{i}.png").write_bytes(b"not decoded here")
    if process == "cannot start":
        monkeypatch.setattr(run_dir_module.sys, "executable", str(tmp_path / "no-python"))
    imported_before = "matplotlib" in sys.modules
    run_dir, _ = write_run(tmp_path / "runs", _record_with_pictures(data), lambda path: path.write_bytes(b"model"), started=0.0)
    names = ("learning_curves.png", "confusion_val.png", "confusion_test.png")
    for name in names:
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    if process == "works" and not imported_before:
        assert "matplotlib" not in sys.modules
    if process == "cannot start":  # drawn here: the same files as the process drew
        monkeypatch.undo()
        again, _ = write_run(tmp_path / "runs-again", _record_with_pictures(data), lambda path: path.write_bytes(b"model"), started=0.0)
        for name in names:
            assert (again / name).read_bytes() == (run_dir / name).read_bytes(), name


def test_a_picture_process_started_with_the_run_ends_with_a_failed_run() -> None:
    """train() starts the pictures' process before anything can fail; a run that fails
    leaves no process waiting for data that will never come."""
    from trainer.run_dir import PictureProcess

    with pytest.raises(RuntimeError):
        with PictureProcess() as pictures:
            process = pictures._process
            assert process is not None and process.poll() is None  # started, waiting for the run's data
            raise RuntimeError("the run failed")
    assert process.poll() is not None
