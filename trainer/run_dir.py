"""The run folder's format: the one writer and the one validated reader.

    runs/<name>-<YYYYmmdd-HHMMSS>/
        model.keras         the float classifier (raw pixels in, softmax out)
        labels.txt          one class name per line, in output order
        run.json            name, labels, image_size, resize, backbone, options, seed, data_dir,
                            feature_cache (where the val/test features are cached, if on disk)
        splits.json         {"format": 2, "data_root": ABS, "train"|"val"|"test": [[path, class], ...]}
        data_report.json    what the scan found and skipped
        metrics.json        val/test metrics, head, fine-tune, features, timings
        history.csv         one row per epoch and stage
        summary.json        the short version, with wall_s
        learning_curves.png, confusion_<split>.png

`splits.json` paths are relative to `data_root`, which is recorded once, so a run folder
can move; `read_run(..., data_root=...)` points it at data that moved too. Runs written
before format 2 hold absolute paths and are read as they are.

`tledge train` writes it (`write_run`); `tledge export` and `tledge evaluate` read it
(`read_run`). Nothing else opens these files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.atomic import write_json, write_text
from edge.preprocess import ResizePolicy
from trainer.errors import OutputError, RunDirError

MODEL_NAME = "model.keras"
LABELS_NAME = "labels.txt"
RUN_NAME = "run.json"
SPLITS_NAME = "splits.json"
SUMMARY_NAME = "summary.json"
SPLITS_FORMAT = 2  # 2: paths relative to "data_root"; absent (1): absolute paths
SPLIT_NAMES = ("train", "val", "test")
_PICTURES_TIMEOUT_S = 120.0  # the picture process, after the model is saved
PARTIAL_PATTERN = ".*.partial"  # a run folder still being written (or killed while it was)


# -- reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFolder:
    """A training run folder, checked. `splits` hold paths resolved against the data root."""

    path: Path
    name: str
    labels: tuple[str, ...]
    image_size: tuple[int, int]  # (height, width), pixels
    resize: ResizePolicy
    backbone: dict[str, Any]
    data_root: Path | None  # None for runs written before splits.json format 2
    splits: dict[str, list[tuple[str, int]]] = field(repr=False)
    run: dict[str, Any] = field(repr=False)  # run.json as written

    @property
    def run_dir(self) -> Path:
        return self.path

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_NAME


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing: pass a run directory written by `tledge train`") from None
    except (OSError, ValueError) as exc:
        raise RunDirError(f"Cannot read {path}: {exc}; re-run `tledge train` to rewrite it") from None


def _check_labels(labels: list[Any], where: Path) -> tuple[str, ...]:
    if not labels or not all(isinstance(label, str) and label.strip() for label in labels):
        raise RunDirError(f"{where}: 'labels' must be a non-empty list of non-blank names")
    if any("\n" in label or "\r" in label for label in labels):
        raise RunDirError(f"{where}: a label contains a line break, which labels.txt cannot hold; rename the class folder")
    if len(set(labels)) != len(labels):
        raise RunDirError(f"{where}: duplicate labels; class names must be unique")
    return tuple(labels)


def _check_split(items: Any, num_classes: int, name: str, where: Path, root: Path | None) -> list[tuple[str, int]]:
    out = []
    for entry in items or []:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], int)):
            raise RunDirError(f"{where}: split '{name}' has a malformed entry {entry!r}; expected [path, class_index]")
        if not 0 <= entry[1] < num_classes:
            raise RunDirError(f"{where}: split '{name}' has class index {entry[1]} for {num_classes} labels")
        out.append((str(root / entry[0]) if root is not None else entry[0], int(entry[1])))
    return out


def _data_root(raw_splits: dict[str, Any], override: str | os.PathLike[str] | None, where: Path) -> Path | None:
    """The folder the split paths are relative to: `override`, else the recorded one."""
    if raw_splits.get("format") is None and "data_root" not in raw_splits:
        return None  # format 1: absolute paths, kept as they are
    recorded = raw_splits.get("data_root")
    if not isinstance(recorded, str) or not recorded:
        raise RunDirError(f"{where}: 'data_root' must name the data folder; re-run `tledge train`")
    root = Path(override).expanduser().resolve() if override is not None else Path(recorded)
    if not root.is_dir():
        hint = "pass the folder it moved to with --data-root" if override is None else "check --data-root"
        raise RunDirError(f"The run's images are not there: data folder {root} does not exist ({where} lists images relative to it); {hint}")
    return root


def _check_data_present(root: Path, splits: dict[str, list[tuple[str, int]]], where: Path) -> None:
    """One stat per image: a data root that exists but is the wrong folder fails here,
    naming a file. (A few missing files are skipped later, by name, as unreadable.)"""
    listed = [path for items in splits.values() for path, _ in items]
    if listed and not any(os.path.isfile(path) for path in listed):
        raise RunDirError(
            f"None of the {len(listed)} images listed in {where} is under {root} (first: {listed[0]}); "
            "pass the data folder the run was trained on with --data-root"
        )


def read_run(run_dir: str | os.PathLike[str], data_root: str | os.PathLike[str] | None = None, require_model: bool = True) -> RunFolder:
    """Read and check a run folder written by `tledge train`; raises `RunDirError` with a remedy.

    `data_root` replaces the recorded data folder (the images moved with the run). The
    split paths come back absolute (format 2) or as recorded (older runs).
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"Run directory not found: {path}; pass the folder `tledge train` wrote")
    run = _read_json(path / RUN_NAME)
    raw_splits = _read_json(path / SPLITS_NAME)
    if not isinstance(run, dict) or not isinstance(raw_splits, dict):
        raise RunDirError(f"{path}: {RUN_NAME} and {SPLITS_NAME} must hold JSON objects; re-run `tledge train`")
    labels = _check_labels(run.get("labels") or [], path / RUN_NAME)
    try:
        height, width = (int(v) for v in run["image_size"])
        resize = ResizePolicy(run.get("resize", ResizePolicy.CENTER_CROP.value))
    except (KeyError, TypeError, ValueError):
        raise RunDirError(f"{path / RUN_NAME}: needs 'image_size': [height, width] and a known 'resize'") from None
    root = _data_root(raw_splits, data_root, path / SPLITS_NAME)
    splits = {name: _check_split(raw_splits.get(name), len(labels), name, path / SPLITS_NAME, root) for name in SPLIT_NAMES}
    if root is not None:
        _check_data_present(root, splits, path / SPLITS_NAME)
    if require_model and not (path / MODEL_NAME).is_file():
        raise RunDirError(f"{path / MODEL_NAME} is missing; the training run did not finish — train again")
    return RunFolder(
        path=path,
        name=str(run.get("name") or path.name),
        labels=labels,
        image_size=(height, width),
        resize=resize,
        backbone=dict(run.get("backbone") or {}),
        data_root=root,
        splits=splits,
        run=run,
    )


# -- writing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """Everything a finished training run writes besides the model itself."""

    name: str
    labels: tuple[str, ...]
    image_size: int  # pixels, square
    resize: ResizePolicy
    backbone: dict[str, Any]  # name, alpha, weights
    options: dict[str, Any]  # TrainOptions.to_json()
    seed: int
    created: datetime  # UTC
    version: str  # tledge version that trained it
    data_root: Path  # absolute
    splits: Mapping[str, Sequence[tuple[Path, int]]]  # absolute image paths
    data_report: dict[str, Any]
    metrics: dict[str, Any]
    history: Sequence[dict[str, Any]]
    summary: dict[str, Any]  # summary.json less run_dir and wall_s, which the writer adds
    #: where the feature pass cached the clean-view features the saved model's backbone
    #: computes ({"root": cache folder, "key": feature-cache key}); None when they are
    #: not on disk or not the saved backbone's (memory cache, fine-tuning)
    feature_cache: dict[str, str] | None = None


def run_name(name: str | None, data_dir: str | os.PathLike[str]) -> str:
    """The run's name: `name`, else the data folder's name, filesystem-safe."""
    raw = name or Path(data_dir).expanduser().resolve().name or "run"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.") or "run"


def _relative(path: Path, root: Path) -> str:
    """`path` relative to `root` with '/' separators; absolute when outside it."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def splits_json(record: RunRecord) -> dict[str, Any]:
    """The content of splits.json (format 2)."""
    return {
        "format": SPLITS_FORMAT,
        "data_root": str(record.data_root),
        **{s: [[_relative(path, record.data_root), label] for path, label in record.splits.get(s, ())] for s in SPLIT_NAMES},
    }


def _unique(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _write_history_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """One row per epoch: stage, epoch, loss, accuracy, val_loss, val_accuracy."""
    import csv
    import io

    columns = ["stage", "epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


def _pictures(folder: Path, record: RunRecord) -> dict[str, Any]:
    """What `trainer.plots.draw` takes for the run's pictures, as plain data."""
    confusions = [
        (record.metrics[split]["confusion_matrix"], list(record.labels), f"confusion_{split}.png", f"{record.name}: {split} confusion matrix")
        for split in ("val", "test") if record.metrics.get(split)
    ]
    return {"folder": str(folder), "history": list(record.history), "confusions": confusions}


def _write_pictures(folder: Path, record: RunRecord) -> None:
    from trainer.plots import draw

    given = _pictures(folder, record)
    draw(folder, given["history"], given["confusions"])


class PictureProcess:
    """`python -m trainer.plots`, started early: it imports matplotlib at once and then waits
    for the run's data (`send`), so the import overlaps the training. `wait()` says whether
    it drew every picture (else the caller draws them itself); `close()` ends it. A
    context manager: training that fails closes it."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "trainer.plots"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        except OSError:  # no process: drawn in this one instead
            pass

    def __enter__(self) -> "PictureProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, folder: Path, record: RunRecord) -> None:
        """Draw the pictures of `record` into `folder`."""
        if self._process is None or self._process.stdin is None:
            return
        try:
            self._process.stdin.write(json.dumps(_pictures(folder, record)).encode())
            self._process.stdin.close()
        except (OSError, TypeError, ValueError):  # the process ended, or the data JSON cannot hold
            self.close()

    def wait(self) -> bool:
        if self._process is None:
            return False
        try:
            return self._process.wait(timeout=_PICTURES_TIMEOUT_S) == 0
        except subprocess.TimeoutExpired:
            self.close()
            return False

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None


def _write_files(folder: Path, final: Path, record: RunRecord, save_model: Callable[[Path], None], pictures: PictureProcess | None) -> dict[str, Any]:
    # The pictures are drawn in a process of their own (started with the run when train()
    # passes it, so matplotlib's import is done by now) while the model is saved: a thread
    # of this process would hold the GIL the save needs. Should that process fail, they
    # are drawn here (and a failure to draw them raises).
    pictures = pictures or PictureProcess()
    try:
        pictures.send(folder, record)
        save_model(folder / MODEL_NAME)
        _write_records(folder, record)
        drawn = pictures.wait()
    finally:
        pictures.close()
    if not drawn:
        _write_pictures(folder, record)
    return {"run_dir": str(final), **record.summary}


def _write_records(folder: Path, record: RunRecord) -> None:
    write_text(folder / LABELS_NAME, "\n".join(record.labels) + "\n")
    run = {
        "tledge_version": record.version,
        "name": record.name,
        "data_dir": str(record.data_root),
        "labels": list(record.labels),
        "image_size": [record.image_size, record.image_size],
        "resize": record.resize.value,
        "backbone": record.backbone,
        "options": record.options,
        "created_utc": record.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seed": record.seed,
    }
    if record.feature_cache:
        run["feature_cache"] = record.feature_cache  # the export's float side reads these
    write_json(folder / RUN_NAME, run)
    write_json(folder / SPLITS_NAME, splits_json(record))
    write_json(folder / "data_report.json", record.data_report)
    write_json(folder / "metrics.json", record.metrics)
    _write_history_csv(folder / "history.csv", record.history)


def write_run(
    out_dir: str | os.PathLike[str], record: RunRecord, save_model: Callable[[Path], None], started: float, pictures: PictureProcess | None = None
) -> tuple[Path, dict[str, Any]]:
    """Write the run folder under a temporary name, then rename it: no half run looks
    complete. `save_model(path)` writes model.keras; `started` (time.perf_counter()) is
    when training began, for summary.json's wall_s; `pictures`: a process started earlier
    to draw the pictures (else one starts now; closed either way). Returns (run folder, summary)."""
    from trainer.export.bundle_writer import remove_stale

    out = Path(out_dir).expanduser().resolve()
    final = _unique(out / f"{record.name}-{record.created.astimezone().strftime('%Y%m%d-%H%M%S')}")
    tmp = out / f".{final.name}.partial"
    try:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale(out, PARTIAL_PATTERN)  # left by runs that were killed while writing
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        summary = _write_files(tmp, final, record, save_model, pictures)
        summary["wall_s"] = round(time.perf_counter() - started, 2)  # seconds, everything but the rename
        write_json(tmp / SUMMARY_NAME, summary)
        os.replace(tmp, final)
    except OSError as exc:  # disk full, read-only or unwritable --out: a message, not a traceback
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"Cannot write the run to {final}: {exc.strerror or exc}; free some disk space or choose another --out") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, summary
