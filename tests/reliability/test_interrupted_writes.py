"""Kills and full disks while `tledge train` and `tledge export` write their results: no
partial or corrupt model file is ever left where a good one is expected, and a re-run works.

The kills are real SIGKILLs (slow tests) of real `tledge` processes, sent the moment a watched file
appears (polled every millisecond). The full disk is a real 1-3 MB tmpfs where the
machine lets us mount one (root), else those tests skip; the fake full disk (an ENOSPC
raised by a patched write) runs everywhere.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from tledge_paths import ROOT

SLOW = pytest.mark.slow  # the tests that train or export in real processes (minutes in all)

TINY = ["--image-size", "32", "--alpha", "0.35", "--weights", "none", "--epochs", "1", "--augment-views", "0", "--quiet"]
EXPORT = ["--mode", "float32"]
CLI = "import sys; from edge.cli import main; sys.argv = ['tledge'] + sys.argv[1:]; main()"


def tledge(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def kill_when(args: list[str], ready: Callable[[], bool], timeout: float = 600) -> bool:
    """Run `tledge ARGS`; SIGKILL it as soon as `ready()` holds. True if it was killed."""
    proc = subprocess.Popen([sys.executable, "-c", CLI, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                return True
            time.sleep(0.001)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def hidden_entries(folder: Path, marker: str) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.name.startswith(".") and marker in p.name]
    except FileNotFoundError:
        return []


def visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("kill") / "data", per_class=8, size=40, classes=("circle", "square"), seed=3)


@pytest.fixture(scope="module")
def trained_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("runs")
    result = tledge(["train", str(dataset), "--out", str(out), *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = visible(out)
    return run


def assert_complete_bundle(bundle: Path) -> None:
    from edge.bundle import load_model_info
    from edge.classifier import Classifier

    info = load_model_info(bundle)  # sha256, labels, format
    prediction = Classifier(info, threads=1).classify(np.full((40, 40, 3), 128, np.uint8))
    assert prediction.label in ("circle", "square")


# -- kills --------------------------------------------------------------------------------

TRAIN_KILL_POINTS: dict[str, Callable[[Path], bool]] = {
    "run folder staged": lambda out: bool(hidden_entries(out, ".partial")),
    "model.keras being written": lambda out: any((p / "model.keras").exists() for p in hidden_entries(out, ".partial")),
}


@SLOW
@pytest.mark.parametrize("point", sorted(TRAIN_KILL_POINTS))
def test_train_killed_while_writing_leaves_no_run_and_a_rerun_works(dataset: Path, tmp_path: Path, point: str) -> None:
    pytest.importorskip("tensorflow")
    out = tmp_path / "runs"
    assert kill_when(["train", str(dataset), "--out", str(out), *TINY], lambda: TRAIN_KILL_POINTS[point](out))
    assert visible(out) == []  # nothing that looks like a finished run
    result = tledge(["train", str(dataset), "--out", str(out), *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = visible(out)
    assert (run / "model.keras").stat().st_size > 0
    assert json.loads((run / "summary.json").read_text())["labels"] == ["circle", "square"]


@SLOW
def test_export_killed_while_staging_leaves_no_bundle_and_a_rerun_works(trained_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "models" / "tiny"
    staged = lambda: bool(hidden_entries(target.parent, ".partial-"))  # noqa: E731
    assert kill_when(["export", str(trained_run), "--out", str(target), *EXPORT], staged)
    assert not target.exists()
    result = tledge(["export", str(trained_run), "--out", str(target), *EXPORT])
    assert result.returncode == 0, result.stderr[-3000:]
    assert_complete_bundle(target)


@SLOW
def test_forced_export_killed_midway_keeps_the_old_bundle(trained_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "models" / "tiny"
    assert tledge(["export", str(trained_run), "--out", str(target), *EXPORT]).returncode == 0
    before = (target / "model.tflite").read_bytes()
    staged_with_model = lambda: any((p / "model.tflite").exists() for p in hidden_entries(target.parent, ".partial-"))  # noqa: E731
    assert kill_when(["export", str(trained_run), "--out", str(target), "--force", *EXPORT], staged_with_model)
    assert (target / "model.tflite").read_bytes() == before
    assert_complete_bundle(target)


# -- a real full disk (tmpfs) -------------------------------------------------------------

@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """mount(size) -> a fresh tmpfs of `size` (e.g. "1m"); unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}); the fake full disk test covers this")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], capture_output=True)


@SLOW
def test_export_to_a_full_disk_fails_cleanly(trained_run: Path, small_disk: Callable[[str], Path]) -> None:
    disk = small_disk("1m")  # the float32 model alone is larger
    result = tledge(["export", str(trained_run), "--out", str(disk / "tiny"), *EXPORT])
    assert result.returncode == 1, result.stderr[-3000:]
    assert "error:" in result.stderr and "disk space" in result.stderr and "Traceback" not in result.stderr
    assert list(disk.iterdir()) == []  # no bundle, no staging folder, no temporary file


@SLOW
def test_train_to_a_full_disk_fails_cleanly_and_a_rerun_elsewhere_works(dataset: Path, tmp_path: Path, small_disk: Callable[[str], Path]) -> None:
    pytest.importorskip("tensorflow")
    disk = small_disk("1m")  # model.keras of the tiny run is ~2 MB
    result = tledge(["train", str(dataset), "--out", str(disk / "runs"), *TINY])
    assert result.returncode == 1, result.stderr[-3000:]
    assert "error:" in result.stderr and "disk space" in result.stderr and "Traceback" not in result.stderr
    assert [p for p in (disk / "runs").rglob("*")] == []  # the partial run folder is gone


# -- a fake full disk (runs everywhere) -----------------------------------------------------

def test_bundle_staging_on_enospc_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.errors import ExportError
    from trainer.export import bundle_writer

    real_fdopen = os.fdopen
    writes = {"n": 0}

    class FullDisk:
        """A file object whose second write fails like a full disk."""

        def __init__(self, handle: object) -> None:
            self.handle = handle

        def __enter__(self) -> "FullDisk":
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()  # type: ignore[attr-defined]

        def write(self, data: bytes) -> int:
            writes["n"] += 1
            if writes["n"] >= 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.handle.write(data)  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> object:
            return getattr(self.handle, name)

    monkeypatch.setattr(bundle_writer.os, "fdopen", lambda fd, mode="r", *a, **k: FullDisk(real_fdopen(fd, mode, *a, **k)))
    target = tmp_path / "models" / "tiny"
    with pytest.raises(ExportError, match="disk space"):
        with bundle_writer.BundleStaging(target, force=False) as stage:
            stage.write("model.tflite", b"x" * 100)
            stage.write("labels.txt", b"a\nb\n")
            stage.commit()
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # staging folder and temporary files removed


# -- what the atomic writes leave behind is readable by a device's service user -------------

@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_atomic_writes_get_the_modes_a_plain_write_would(tmp_path: Path, umask: int) -> None:
    """mkstemp/mkdtemp make 0600/0700 entries; a bundle copied to a device must still be
    readable by the user its service runs as."""
    from trainer.export.bundle_writer import BundleStaging
    from edge.atomic import write_text as write_run_file

    old = os.umask(umask)
    try:
        with BundleStaging(tmp_path / "models" / "tiny", force=False) as stage:
            stage.write("model.tflite", b"TFL3")
            bundle = stage.commit()
        write_run_file(tmp_path / "summary.json", "{}\n")
    finally:
        os.umask(old)
    assert (bundle.stat().st_mode & 0o777) == 0o777 & ~umask
    assert ((bundle / "model.tflite").stat().st_mode & 0o777) == 0o666 & ~umask
    assert ((tmp_path / "summary.json").stat().st_mode & 0o777) == 0o666 & ~umask
