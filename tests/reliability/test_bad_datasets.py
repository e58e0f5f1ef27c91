"""`tledge train` on bad datasets: bad files are skipped and named, unusable datasets stop
with exit code 1 and an actionable one-line message; never a traceback or a hang.

One real (tiny) training run on a dataset holding the whole bad-image corpus, in a real
process; the early refusals run in-process through Typer's CliRunner (they stop before
any training).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import gradient_rgb, jpeg_bytes, noisy_rgb, png_bytes, write_dirty_dataset
from PIL import Image
from tledge_paths import ROOT
from typer.testing import CliRunner

TINY = ["--image-size", "32", "--alpha", "0.35", "--weights", "none", "--epochs", "1", "--augment-views", "0", "--batch-size", "8"]


def write_class(folder: Path, count: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        (folder / f"img_{i}.png").write_bytes(png_bytes(Image.fromarray(noisy_rgb(rng, 36))))


def tledge_process(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    code = "import sys; from edge.cli import main; sys.argv = ['tledge'] + sys.argv[1:]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_train_skips_and_names_every_bad_file(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    data = write_dirty_dataset(tmp_path / "dirty data")
    result = tledge_process(["train", str(data.root), "--out", str(tmp_path / "runs"), "--json", *TINY])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    run_dir = Path(summary["run_dir"])
    assert sorted(summary["labels"]) == sorted(data.usable)
    assert sum(summary["images"].values()) == sum(data.usable.values())
    report = json.loads((run_dir / "data_report.json").read_text(encoding="utf-8"))
    skipped = {Path(entry["path"]).name: entry["reason"] for entry in report["skipped"]}
    assert sorted(skipped) == sorted(data.refused)
    assert all(reason.strip() for reason in skipped.values())
    assert "skipped" in result.stderr  # the console says so too, naming an example
    labels_txt = (run_dir / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert labels_txt == sorted(data.usable)  # spaces and non-ASCII class names intact


def test_duplicates_across_splits_are_reported(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    root = tmp_path / "presplit"
    for split, count in (("train", 6), ("val", 2), ("test", 2)):
        for index, name in enumerate(("a", "b")):
            write_class(root / split / name, count, seed=10 * ("train", "val", "test").index(split) + index)
    shutil.copy(root / "train" / "a" / "img_0.png", root / "test" / "a" / "copy_of_train.png")
    shutil.copy(root / "train" / "b" / "img_1.png", root / "val" / "b" / "also_in_train.png")
    from edge.cli import app

    result = CliRunner().invoke(app, ["train", str(root), "--out", str(tmp_path / "runs"), "--json", *TINY])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    report = json.loads((Path(summary["run_dir"]) / "data_report.json").read_text(encoding="utf-8"))
    groups = [sorted(Path(p).name for p in group) for group in report["duplicates_across_splits"]]
    assert sorted(groups) == [["also_in_train.png", "img_1.png"], ["copy_of_train.png", "img_0.png"]]
    assert any("more than one split" in w for w in summary["warnings"])


def _no_class_dirs(root: Path) -> None:
    root.mkdir()
    (root / "a.jpg").write_bytes(jpeg_bytes(gradient_rgb()))


def _single_class(root: Path) -> None:
    write_class(root / "only", 4)


def _empty_class(root: Path) -> None:
    write_class(root / "cat", 4)
    (root / "dog").mkdir()


def _only_bad_files(root: Path) -> None:
    write_class(root / "cat", 4)
    (root / "dog").mkdir()
    (root / "dog" / "empty.jpg").write_bytes(b"")
    (root / "dog" / "text.jpg").write_bytes(b"hello")


def _file_not_folder(root: Path) -> None:
    root.write_bytes(b"not a folder")


def _only_symlink_loops(root: Path) -> None:
    write_class(root / "cat", 4)
    (root / "dog").mkdir()
    os.symlink("loop.jpg", root / "dog" / "loop.jpg")
    os.symlink("..", root / "dog" / "up")


REFUSED = {
    "missing folder": (lambda root: None, "is not a folder"),
    "a file, not a folder": (_file_not_folder, "is not a folder"),
    "no class folders": (_no_class_dirs, "0 class folder(s)"),
    "single class": (_single_class, "at least 2"),
    "empty class": (_empty_class, "no usable training images"),
    "class of bad files only": (_only_bad_files, "no usable training images"),
    "class of symlink loops only": (_only_symlink_loops, "no usable training images"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unusable_dataset_stops_with_exit_code_1(tmp_path: Path, case: str) -> None:
    pytest.importorskip("tensorflow")
    from edge.cli import app

    make, words = REFUSED[case]
    root = tmp_path / "data"
    make(root)
    result = CliRunner().invoke(app, ["train", str(root), "--out", str(tmp_path / "runs"), *TINY])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "error:" in result.stderr and words in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("model.keras"))


def test_non_utf8_class_folder_is_refused_or_kept_without_a_traceback(tmp_path: Path) -> None:
    """A folder name that is not UTF-8 cannot be written to labels.txt as it is."""
    pytest.importorskip("tensorflow")
    root = tmp_path / "data"
    write_class(root / "cat", 4)
    write_class(Path(os.fsdecode(bytes(root) + b"/caf\xe9")), 4)
    result = tledge_process(["train", str(root), "--out", str(tmp_path / "runs"), *TINY])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if result.returncode == 1:
        assert "error:" in result.stderr and "UTF-8" in result.stderr
    else:
        assert result.returncode == 0, result.stderr[-3000:]
