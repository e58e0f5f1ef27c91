"""`tledge label DIR --to DATA` and the inbox it reads: prompts, --accept-top, names, faults."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from inbox_helpers import fill_inbox
from typer.testing import CliRunner

from edge import inbox
from edge.errors import FrameNotFoundError, InboxError, LabelNameError
from edge.cli import app

runner = CliRunner()


def label(*args: object, input: str | None = None):
    return runner.invoke(app, ["label", *map(str, args)], input=input)


def log_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / inbox.LOG_NAME).read_text().splitlines()]


def test_the_prompt_files_skips_discards_and_quits(tmp_path: Path) -> None:
    folder, data = tmp_path / "inbox", tmp_path / "data"
    frames = fill_inbox(folder, ["red", "green", "blue", "gray"])
    first_jpeg = frames[0].path.read_bytes()
    result = label(folder, "--to", data, input="red\n\n-\nq\n")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert frames[0].name in out and "0.550  red" in out and "0.250  green" in out and "small_margin" in out
    assert frames[3].name in out  # asked about the fourth, then quit
    assert sorted(os.listdir(data / "red")) == [frames[0].name]
    assert (data / "red" / frames[0].name).read_bytes() == first_jpeg
    left = [f.name for f in inbox.list_frames(folder).frames]
    assert left == [frames[1].name, frames[3].name]  # skipped and not reached stay; filed and discarded are gone
    assert not (folder / inbox.sidecar_name(frames[0].name)).exists()
    logged = log_lines(folder)
    assert [(r["image"], r["label"]) for r in logged] == [(frames[0].name, "red"), (frames[2].name, None)]
    assert logged[0]["sidecar"]["model"]["sha256"] == "cd" * 32 and logged[0]["to"].endswith(f"red/{frames[0].name}")
    assert "filed 1, discarded 1, skipped 1, failed 0; 2 frame(s) left" in result.stderr


def test_a_bad_label_is_refused_and_asked_again_and_a_new_one_confirmed(tmp_path: Path) -> None:
    folder, data = tmp_path / "inbox", tmp_path / "data"
    [frame] = fill_inbox(folder, ["blue"])
    result = label(folder, "--to", data, input="../escape\ntrain\nmugg\nn\nmug\ny\n")
    assert result.exit_code == 0, result.output
    assert "cannot be a folder name" in result.stderr and "reserved" in result.stderr
    assert "'mugg' is a new label" in result.stdout
    assert sorted(p.name for p in data.iterdir()) == ["mug"]
    assert (data / "mug" / frame.name).is_file()
    assert not (tmp_path / "escape").exists()


def test_end_of_input_quits_cleanly(tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    fill_inbox(folder, ["red", "green"])
    result = label(folder, "--to", tmp_path / "data", input="")
    assert result.exit_code == 0, result.output
    assert len(inbox.list_frames(folder).frames) == 2


def test_accept_top_files_every_frame_under_its_top_label(tmp_path: Path) -> None:
    folder, data = tmp_path / "inbox", tmp_path / "data"
    (data / "train" / "red").mkdir(parents=True)  # a split dataset: frames go to train/
    (data / "val").mkdir()
    frames = fill_inbox(folder, ["red", "green", "red"])
    result = label(folder, "--to", data, "--accept-top")
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(data / "train" / "red")) == sorted([frames[0].name, frames[2].name])
    assert os.listdir(data / "train" / "green") == [frames[1].name]
    assert inbox.list_frames(folder).frames == ()
    assert "filed 3" in result.stderr


def test_an_empty_inbox_and_a_half_written_frame(tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    assert "no frames to label" in label(folder, "--to", tmp_path / "data").stderr
    (folder / "20261129-101500-f0000042-1a2b3c.jpg").write_bytes(b"\xff\xd8 no sidecar yet")
    result = label(folder, "--to", tmp_path / "data", "--accept-top")
    assert result.exit_code == 0 and "20261129-101500-f0000042-1a2b3c.jpg: no sidecar yet" in result.stderr


def test_an_unwritable_dataset_leaves_the_frame_in_the_inbox(tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    [frame] = fill_inbox(folder, ["red"])
    data = tmp_path / "data"
    data.mkdir()
    (data / "red").write_text("a file where the class folder should be")
    result = label(folder, "--to", data, "--accept-top")
    assert result.exit_code == 1 and "not filed" in result.stderr and "Traceback" not in result.output
    assert [f.name for f in inbox.list_frames(folder).frames] == [frame.name]


@pytest.mark.parametrize("name", ["", " red", "red ", "a/b", "a\\b", "..", ".", ".hidden", "../x", "train", "VAL", "x" * 65, "a\x00b", "tab\tname", "c:d"])
def test_labels_that_cannot_be_class_folders_are_refused(name: str) -> None:
    with pytest.raises(LabelNameError):
        inbox.check_label(name)


@pytest.mark.parametrize("name", ["mug", "coffee cup", "Tasse à café", "3", "t-shirt_2"])
def test_ordinary_labels_are_accepted(name: str) -> None:
    assert inbox.check_label(name) == name


@pytest.mark.parametrize("name", ["../x.jpg", "x.jpg", "/etc/passwd", "labelled.jsonl", "20261129-101500-f0000042-1a2b3c.jpg/../../x",
                                  "20261129-101500-f0000042-1a2b3c.json", "..%2F20261129-101500-f0000042-1a2b3c.jpg"])
def test_only_the_inbox_name_format_is_a_frame_name(name: str, tmp_path: Path) -> None:
    with pytest.raises(FrameNotFoundError):
        inbox.frame_path(tmp_path, name)


def test_a_symlink_in_the_inbox_is_not_a_frame(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the live view")
    folder = tmp_path / "inbox"
    folder.mkdir()
    name = "20261129-101500-f0000042-1a2b3c.jpg"
    (folder / name).symlink_to(secret)
    (folder / inbox.sidecar_name(name)).write_text(json.dumps({"top": []}))
    with pytest.raises(InboxError):
        inbox.frame_path(folder, name)
    assert inbox.list_frames(folder).frames == ()
