"""The `--save-uncertain` folder ("inbox"): its one writer, its validated reader, and filing.

    DIR/20261129-101500-f0000042-1a2b3c.jpg    the frame, as the camera saw it
    DIR/20261129-101500-f0000042-1a2b3c.json   its sidecar: scores, top labels, why, model sha256
    DIR/labelled.jsonl                         one line per frame labelled or discarded (provenance)

A frame is complete once its sidecar exists: the JPEG is written first and the sidecar
last, each atomically, so a reader never lists half a frame. Labelling moves the JPEG
into the training layout, `DATA/<label>/` (or `DATA/train/<label>/` when DATA has
train/ val/ test/ folders), appends the sidecar with the label to `labelled.jsonl`, and
removes the pair from the inbox. Frame names are checked against the one pattern this
module writes, so a request can never name a path outside DIR.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge import atomic
from edge.errors import FrameNotFoundError, InboxError, LabelNameError

FRAME_SUFFIX = ".jpg"
SIDECAR_SUFFIX = ".json"
LOG_NAME = "labelled.jsonl"
SIDECAR_VERSION = 1
MAX_SIDECAR_BYTES = 64 * 1024  # a sidecar is ~1 KB; anything bigger is not ours
MAX_LABEL_CHARS = 64
#: Folder names the dataset layout gives a meaning: a class may not be called that.
RESERVED_LABELS = frozenset({"train", "val", "test"})

_FRAME_NAME = re.compile(r"^[0-9]{8}-[0-9]{6}-f[0-9]{1,12}-[0-9a-f]{6}\.jpg$")
_BAD_LABEL_CHARS = re.compile(r"[\\/:*?\"<>|\x00-\x1f\x7f]")


@dataclass(frozen=True)
class SavedFrame:
    """One complete frame of the inbox: its file name and its parsed sidecar."""

    name: str  # e.g. 20261129-101500-f0000042-1a2b3c.jpg
    path: Path
    sidecar: dict[str, Any]

    @property
    def top(self) -> list[tuple[str, float]]:
        """(label, score) pairs, best first, as the model saw the frame."""
        return [(str(t.get("label")), float(t.get("score", 0.0))) for t in self.sidecar.get("top", []) if isinstance(t, dict)]

    @property
    def reasons(self) -> list[str]:
        return [str(r) for r in self.sidecar.get("reasons", [])]

    def to_dict(self) -> dict[str, Any]:
        """What the live view's list endpoint reports for this frame."""
        return {
            "name": self.name,
            "index": self.sidecar.get("index"),
            "time": self.sidecar.get("time"),
            "reasons": self.reasons,
            "top": [{"label": label, "score": score} for label, score in self.top],
            "decision": self.sidecar.get("decision"),
        }


@dataclass(frozen=True)
class Listing:
    """The inbox's complete frames (oldest first) and the files that were passed over, with why."""

    frames: tuple[SavedFrame, ...]
    skipped: tuple[tuple[str, str], ...]  # (file name, reason)


# -- names ---------------------------------------------------------------------------------


def new_frame_name(index: int, timestamp: float) -> str:
    """A unique, time-ordered name for frame `index` captured at `timestamp` (time.time(), s)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(timestamp))
    return f"{stamp}-f{max(0, index):07d}-{uuid.uuid4().hex[:6]}{FRAME_SUFFIX}"


def check_frame_name(name: str) -> str:
    """`name` if it is a frame name this module writes (a bare file name); else InboxError."""
    if not isinstance(name, str) or not _FRAME_NAME.match(name):
        raise FrameNotFoundError(f"{name!r} is not a saved frame's name (expected e.g. 20261129-101500-f0000042-1a2b3c.jpg)")
    return name


def check_label(label: str) -> str:
    """`label` if it can be a class folder; else InboxError saying what to change.

    No path separators or other characters file systems refuse, no leading dot (hidden,
    and `..`), not `train`/`val`/`test` (the dataset layout's own folders), at most 64
    characters, no spaces at the ends.
    """
    if not isinstance(label, str) or not label:
        raise LabelNameError("the label is empty; type a class name such as mug")
    if label != label.strip():
        raise LabelNameError(f"the label {label!r} has spaces at its ends; remove them")
    if len(label) > MAX_LABEL_CHARS:
        raise LabelNameError(f"the label is {len(label)} characters; use at most {MAX_LABEL_CHARS}")
    if label.startswith(".") or _BAD_LABEL_CHARS.search(label):
        raise LabelNameError(
            f"the label {label!r} cannot be a folder name; use letters, digits, spaces, '-' or '_' "
            "(no slashes, no leading dot)"
        )
    if label.lower() in RESERVED_LABELS:
        raise LabelNameError(f"the label {label!r} is reserved by the dataset layout (train/ val/ test/); choose another name")
    return label


def sidecar_name(frame_name: str) -> str:
    return frame_name[: -len(FRAME_SUFFIX)] + SIDECAR_SUFFIX


# -- the writer ----------------------------------------------------------------------------


def write_frame(folder: Path, name: str, jpeg: bytes, sidecar: dict[str, Any]) -> int:
    """Write the JPEG, then its sidecar (each atomically); returns the bytes written.

    A failure leaves no half frame: a JPEG whose sidecar could not be written is removed.
    Raises OSError (disk full, permissions) for the caller to report.
    """
    check_frame_name(name)
    image = atomic.write_bytes(folder / name, jpeg, durable=False)  # a lost frame is no loss; the rename is what matters
    record = {"version": SIDECAR_VERSION, "image": name, **sidecar}
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    try:
        atomic.write_text(folder / sidecar_name(name), text, durable=False)
    except BaseException:
        image.unlink(missing_ok=True)
        raise
    return len(jpeg) + len(text.encode("utf-8"))


def folder_bytes(folder: Path) -> int:
    """Bytes used by the files directly in `folder` (0 when it cannot be read)."""
    total = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    except OSError:
        return 0
    return total


# -- the reader ----------------------------------------------------------------------------


def _read_sidecar(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        data = handle.read(MAX_SIDECAR_BYTES + 1)
    if len(data) > MAX_SIDECAR_BYTES:
        raise ValueError(f"larger than {MAX_SIDECAR_BYTES} bytes")
    value = json.loads(data.decode("utf-8"))
    if not isinstance(value, dict) or not isinstance(value.get("top", []), list):
        raise ValueError("not a sidecar object")
    return value


def list_frames(folder: Path) -> Listing:
    """The complete frames in `folder`, oldest first. A JPEG without its sidecar (still
    being written, or a crash) and an unreadable sidecar are passed over and named."""
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return Listing((), ())
    except OSError as exc:
        raise InboxError(f"Cannot read {folder} ({exc.strerror or exc}); check the folder and its permissions") from None
    present = set(names)
    frames: list[SavedFrame] = []
    skipped: list[tuple[str, str]] = []
    for name in names:
        if not _FRAME_NAME.match(name):
            continue
        side = sidecar_name(name)
        if side not in present:
            skipped.append((name, "no sidecar yet (being written, or left by a crash)"))
            continue
        path = folder / name
        if path.is_symlink() or not path.is_file():
            skipped.append((name, "not a regular file"))
            continue
        try:
            frames.append(SavedFrame(name, path, _read_sidecar(folder / side)))
        except (OSError, ValueError) as exc:
            skipped.append((name, f"unreadable sidecar {side} ({exc})"))
    return Listing(tuple(frames), tuple(skipped))


def frame_path(folder: Path, name: str) -> Path:
    """The path of complete frame `name` in `folder`; InboxError if it is not there."""
    path = folder / check_frame_name(name)
    if path.is_symlink() or not path.is_file() or not (folder / sidecar_name(name)).is_file():
        raise FrameNotFoundError(f"no saved frame {name} in {folder} (already labelled or discarded?)")
    return path


# -- filing --------------------------------------------------------------------------------


def class_folder(data_dir: Path, label: str) -> Path:
    """Where a frame of class `label` goes: DATA/<label>/, or DATA/train/<label>/ when DATA
    is split into train/ val/ test/ folders."""
    root = data_dir / "train" if (data_dir / "train").is_dir() else data_dir
    return root / check_label(label)


def _log(folder: Path, record: dict[str, Any]) -> None:
    """Append one line to labelled.jsonl (a log grows: appended and flushed, not rewritten)."""
    with open(folder / LOG_NAME, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def file_frame(folder: Path, name: str, label: str, data_dir: Path) -> Path:
    """Move frame `name` from the inbox into the class folder of `label`; returns its new path.

    The copy in DATA is written atomically before anything is removed from the inbox, so
    a failure at any step leaves the frame in one piece in one of the two places.
    """
    label = check_label(label)
    source = frame_path(folder, name)
    target_dir = class_folder(data_dir, label)
    target = target_dir / name
    try:
        sidecar = _read_sidecar(folder / sidecar_name(name))
    except (OSError, ValueError) as exc:
        raise InboxError(f"the sidecar of {name} is unreadable ({exc}); discard the frame") from None
    try:
        data = source.read_bytes()
        target_dir.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise InboxError(f"{target} already exists; remove one of the two copies")
        atomic.write_bytes(target, data)
    except OSError as exc:
        raise InboxError(f"Cannot file {name} into {target_dir} ({exc.strerror or exc}); check that DATA is writable and has space") from None
    try:
        _log(folder, {"image": name, "label": label, "to": str(target), "labelled_at": _now_iso(), "sidecar": sidecar})
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise InboxError(f"Cannot write {folder / LOG_NAME} ({exc.strerror or exc}); the frame stays in the inbox") from None
    _remove_pair(folder, name)
    return target


def discard_frame(folder: Path, name: str) -> None:
    """Delete frame `name` and its sidecar from the inbox (logged with label null)."""
    frame_path(folder, name)
    try:
        _log(folder, {"image": name, "label": None, "labelled_at": _now_iso()})
    except OSError:
        pass  # discarding must work on a full disk: that is when it is needed
    _remove_pair(folder, name)


def _remove_pair(folder: Path, name: str) -> None:
    try:
        (folder / name).unlink(missing_ok=True)
        (folder / sidecar_name(name)).unlink(missing_ok=True)  # JPEG first: a sidecar left alone is never listed
    except OSError as exc:
        raise InboxError(f"Cannot remove {name} from {folder} ({exc.strerror or exc}); check the folder's permissions") from None


def known_labels(data_dir: Path | None, model_labels: tuple[str, ...] = ()) -> list[str]:
    """The model's labels, then the class folders already in DATA (sorted), without repeats."""
    labels = list(dict.fromkeys(model_labels))
    if data_dir is not None:
        root = data_dir / "train" if (data_dir / "train").is_dir() else data_dir
        try:
            found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            found = []
        labels += [name for name in found if name not in labels and name.lower() not in RESERVED_LABELS]
    return labels
