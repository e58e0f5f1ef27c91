"""Data rules: layouts, seeded stratified splits, formats, ignored and unreadable files,
clear errors, duplicate (leakage) warnings."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from trainer.errors import DataError
from edge.images import load_rgb
from train_helpers import colour_dataset, solid, write_image
from trainer.dataset import scan, split_counts


def test_same_seed_same_split_and_splits_are_stratified(tmp_path: Path) -> None:
    root = colour_dataset(tmp_path / "d", {"a": 20, "b": 30})
    first, again, other = scan(root, seed=1), scan(root, seed=1), scan(root, seed=2)
    assert first.splits == again.splits
    assert first.splits["val"] != other.splits["val"]
    counts = first.counts()
    assert counts["train"] == {"a": 16, "b": 24}
    assert counts["val"] == {"a": 2, "b": 3} and counts["test"] == {"a": 2, "b": 3}
    paths = [s.path for split in first.splits.values() for s in split]
    assert len(paths) == len(set(paths)) == 50


def test_split_fractions_can_be_changed(tmp_path: Path) -> None:
    root = colour_dataset(tmp_path / "d", {"a": 20, "b": 20})
    counts = scan(root, val_split=0.25, test_split=0.0).counts()
    assert counts["val"] == {"a": 5, "b": 5} and counts["test"] == {"a": 0, "b": 0}
    with pytest.raises(DataError, match="below 1"):
        scan(root, val_split=0.5, test_split=0.5)


@given(st.integers(1, 500), st.floats(0.0, 0.45), st.floats(0.0, 0.45))
def test_split_counts_keep_a_training_image_and_give_val_one_when_possible(n: int, val: float, test: float) -> None:
    n_train, n_val, n_test = split_counts(n, val, test)
    assert n_train + n_val + n_test == n and n_train >= 1
    if n >= 2 and val > 0:
        assert n_val >= 1


def test_presplit_layout_is_used_as_given_and_val_is_carved_when_absent(tmp_path: Path) -> None:
    for seed, (split, count) in enumerate((("train", 6), ("val", 2), ("test", 3))):
        colour_dataset(tmp_path / "full" / split, {"cat": count, "dog": count}, seed=seed * 100)
    dataset = scan(tmp_path / "full")
    assert dataset.layout == "presplit"
    assert {s: sum(c.values()) for s, c in dataset.counts().items()} == {"train": 12, "val": 4, "test": 6}
    assert all("/val/" in str(s.path) for s in dataset.splits["val"])

    colour_dataset(tmp_path / "no_val" / "train", {"cat": 10, "dog": 10})
    carved = scan(tmp_path / "no_val", val_split=0.2)
    assert carved.counts()["val"] == {"cat": 2, "dog": 2} and carved.counts()["test"] == {"cat": 0, "dog": 0}


def test_every_format_and_colour_mode_is_found_and_decodes_to_rgb(tmp_path: Path) -> None:
    rgb = solid((200, 60, 30), 24)
    cls = tmp_path / "d" / "formats"
    files = [
        write_image(cls / "a.jpg", rgb, "JPEG"),
        write_image(cls / "b.png", rgb, "PNG"),
        write_image(cls / "c.bmp", rgb, "BMP"),
        write_image(cls / "d.gif", rgb, "GIF"),
        write_image(cls / "e.webp", rgb, "WEBP"),
        write_image(cls / "gray.png", rgb, "PNG", mode="L"),
        write_image(cls / "palette.png", rgb, "PNG", mode="P"),
        write_image(cls / "alpha.png", rgb, "PNG", mode="RGBA"),
        write_image(cls / "deep.png", rgb, "PNG", mode="I;16"),
        write_image(cls / "cmyk.jpg", rgb, "JPEG", mode="CMYK"),
    ]
    colour_dataset(tmp_path / "d", {"other": 3})
    dataset = scan(tmp_path / "d", val_split=0.0, test_split=0.0)
    found = {s.path.name for s in dataset.splits["train"]}
    assert {f.name for f in files} <= found
    for path in files:
        image = load_rgb(path)
        assert image.dtype == np.uint8 and image.shape == (24, 24, 3), path.name


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    tall = np.zeros((40, 20, 3), dtype=np.uint8)
    tall[:10] = 255  # white band at the top
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone held upright
    path = write_image(tmp_path / "phone.jpg", tall, "JPEG", exif=exif.tobytes())
    assert load_rgb(path).shape == (20, 40, 3)


def test_hidden_and_non_image_files_are_ignored(tmp_path: Path) -> None:
    root = colour_dataset(tmp_path / "d", {"a": 5, "b": 5})
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / ".DS_Store").write_bytes(b"\0\1")
    write_image(root / "a" / ".hidden.png", solid((1, 2, 3)))
    write_image(root / ".thumbs" / "x.png", solid((1, 2, 3)))  # hidden class folder
    dataset = scan(root)
    assert dataset.labels == ("a", "b")
    names = {s.path.name for s in dataset.all_samples()}
    assert ".hidden.png" not in names and len(names) == 10
    assert dataset.report()["ignored_files"] == 3


def test_unreadable_files_are_skipped_and_listed(tmp_path: Path) -> None:
    root = colour_dataset(tmp_path / "d", {"a": 5, "b": 5})
    (root / "a" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    (root / "b" / "empty.png").write_bytes(b"")
    dataset = scan(root)
    skipped = {s.path.name: s.reason for s in dataset.skipped}
    assert set(skipped) == {"garbage.jpg", "empty.png"}
    assert "empty" in skipped["empty.png"] and "not a readable image" in skipped["garbage.jpg"]
    assert {s["path"] for s in dataset.report()["skipped"]} == {str(root / "a" / "garbage.jpg"), str(root / "b" / "empty.png")}


def test_fewer_than_two_classes_is_a_clear_error(tmp_path: Path) -> None:
    root = colour_dataset(tmp_path / "d", {"only": 4})
    with pytest.raises(DataError, match="at least 2") as info:
        scan(root)
    assert "sub-folder" in str(info.value) and "'only'" in str(info.value)
    with pytest.raises(DataError, match="not a folder"):
        scan(tmp_path / "missing")


def test_an_empty_class_is_a_clear_error(tmp_path: Path) -> None:
    root = colour_dataset(tmp_path / "d", {"a": 4, "b": 4})
    (root / "empty").mkdir()
    (root / "unreadable").mkdir()
    (root / "unreadable" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(DataError) as info:
        scan(root)
    message = str(info.value)
    assert "'empty'" in message and "'unreadable'" in message and "remove" in message


def test_duplicates_shared_between_splits_are_warned_about(tmp_path: Path) -> None:
    for seed, split in enumerate(("train", "val")):
        colour_dataset(tmp_path / "d" / split, {"a": 3, "b": 3}, seed=seed * 100)
    dup = (tmp_path / "d" / "train" / "a" / "a_0.png").read_bytes()
    (tmp_path / "d" / "val" / "a" / "copy.png").write_bytes(dup)
    dataset = scan(tmp_path / "d")
    assert len(dataset.duplicate_groups) == 1
    assert any("leakage" in w for w in dataset.warnings)
    assert scan(tmp_path / "d").report()["duplicates_across_splits"][0][-1].endswith("copy.png")


def test_subset_caps_images_per_class_and_split(tmp_path: Path) -> None:
    root = colour_dataset(tmp_path / "d", {"a": 40, "b": 40})
    counts = scan(root, subset=3).counts()
    assert counts["train"] == {"a": 3, "b": 3} and counts["val"] == {"a": 3, "b": 3}


def test_decompression_bombs_are_skipped_not_decoded(tmp_path: Path) -> None:
    root = colour_dataset(tmp_path / "d", {"a": 3, "b": 3})
    buffer = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buffer, "PNG")  # 48 MP, above the 40 MP limit
    (root / "a" / "huge.png").write_bytes(buffer.getvalue())
    skipped = {s.path.name: s.reason for s in scan(root).skipped}
    assert "huge.png" in skipped and "limit" in skipped["huge.png"]
