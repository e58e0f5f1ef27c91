"""A folder of class folders -> a validated file list -> seeded, stratified splits.

Two layouts are understood:

    data/<class>/*.jpg                       split here: seeded and stratified
    data/{train,val,test}/<class>/*.jpg      used as given (val/ and test/ optional)

Hidden files and folders and files that are not images (by suffix) are ignored. Each
image's header is read now (cheap); an unreadable file is skipped and listed with its
reason, never a crash. Pixels are decoded later, once, by the feature pass; files that
fail there are dropped with `Dataset.without`. Labels are the sorted class-folder names.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from edge.images import IMAGE_SUFFIXES, MAX_PIXELS, is_image_name
from trainer.errors import DataError

SPLITS = ("train", "val", "test")
#: Largest image file read (bytes); a 40-megapixel 8-bit RGBA PNG is at most ~160 MB.
MAX_FILE_BYTES = 256 * 1024 * 1024
_SPLIT_ALIASES = {"train": ("train",), "val": ("val", "validation", "valid"), "test": ("test",)}


@dataclass(frozen=True)
class Sample:
    """One image file and its class."""

    path: Path  # absolute
    label: int  # index into Dataset.labels
    digest: str  # sha1 of the file's bytes: duplicate detection and feature-cache key


@dataclass(frozen=True)
class Skipped:
    """A file that was left out, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Dataset:
    """Validated samples per split. Immutable; `without` returns a new one."""

    root: Path
    labels: tuple[str, ...]
    splits: dict[str, tuple[Sample, ...]]
    layout: str  # "folders" (split here) or "presplit"
    skipped: tuple[Skipped, ...] = ()
    ignored_files: int = 0  # hidden files and non-image suffixes
    warnings: tuple[str, ...] = ()
    duplicate_groups: tuple[tuple[Path, ...], ...] = field(default=())  # shared between splits

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class, every class listed (0 included)."""
        out: dict[str, dict[str, int]] = {}
        for split, samples in self.splits.items():
            tally = Counter(s.label for s in samples)
            out[split] = {name: tally.get(i, 0) for i, name in enumerate(self.labels)}
        return out

    def all_samples(self) -> list[Sample]:
        return [s for split in SPLITS for s in self.splits.get(split, ())]

    def without(self, bad: dict[Path, str]) -> "Dataset":
        """A copy with the files in `bad` (path -> reason) moved to `skipped`."""
        if not bad:
            return self
        splits = {k: tuple(s for s in v if s.path not in bad) for k, v in self.splits.items()}
        skipped = self.skipped + tuple(Skipped(p, r) for p, r in sorted(bad.items()))
        new = replace(self, splits=splits, skipped=skipped)
        _check_classes(new)
        return new

    def report(self) -> dict[str, Any]:
        """The data report written to the run directory (JSON-ready)."""
        counts = self.counts()
        return {
            "root": str(self.root),
            "layout": self.layout,
            "labels": list(self.labels),
            "counts": counts,
            "totals": {split: sum(c.values()) for split, c in counts.items()},
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
            "ignored_files": self.ignored_files,
            "duplicates_across_splits": [[str(p) for p in group] for group in self.duplicate_groups],
            "warnings": list(self.warnings),
        }


def scan(
    data_dir: str | os.PathLike[str],
    val_split: float = 0.1,
    test_split: float = 0.1,
    seed: int = 42,
    subset: int | None = None,
    threads: int | None = None,
) -> Dataset:
    """Find, check and split the images under `data_dir`.

    Raises `DataError` for a missing folder, fewer than 2 classes or an empty class.
    """
    root = Path(data_dir).expanduser().resolve()
    _check_fractions(val_split, test_split)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass a folder with one sub-folder of images per class")
    split_dirs = _find_split_dirs(root)
    if split_dirs:
        layout = "presplit"
        found = {split: _list_classes(path) for split, path in split_dirs.items()}
        labels = tuple(sorted(found["train"]))
        extra = sorted({c for split in found.values() for c in split} - set(labels))
        if extra:
            raise DataError(
                f"class folder(s) {extra} exist in val/ or test/ but not in {split_dirs['train']}; "
                "add training images for them or remove those folders"
            )
    else:
        layout = "folders"
        found = {"all": _list_classes(root)}
        labels = tuple(sorted(found["all"]))
    _check_label_count(root, labels)

    files = {split: {c: _image_files(d) for c, d in classes.items()} for split, classes in found.items()}
    ignored = sum(n for classes in files.values() for _, n in classes.values())
    rng_seed = f"tledge-split:{seed}"
    if subset is not None and layout == "presplit":  # quick runs: do not even read the rest
        files = {s: {c: (_take(ps, subset, f"{rng_seed}:{s}:{c}"), n) for c, (ps, n) in d.items()} for s, d in files.items()}
    probed, skipped = _probe_all([p for classes in files.values() for ps, _ in classes.values() for p in ps], threads)

    def samples_of(split: str) -> dict[int, list[Sample]]:
        out: dict[int, list[Sample]] = {}
        for name, (paths, _) in files[split].items():
            idx = labels.index(name)
            out[idx] = [Sample(p, idx, probed[p]) for p in paths if p in probed]
        return out

    if layout == "presplit":
        per_split = {split: samples_of(split) for split in files}
        if "val" not in per_split:  # carve val out of train, stratified
            train, val, _ = _stratified(per_split["train"], val_split, 0.0, rng_seed)
            per_split["train"], per_split["val"] = train, val
    else:
        train, val, test = _stratified(samples_of("all"), val_split, test_split, rng_seed)
        per_split = {"train": train, "val": val, "test": test}

    if subset is not None:
        per_split = {s: {c: _take(v, subset, f"{rng_seed}:{s}:{c}") for c, v in d.items()} for s, d in per_split.items()}
    splits = {s: tuple(x for c in sorted(per_split.get(s, {})) for x in per_split[s][c]) for s in SPLITS}
    dataset = Dataset(root, labels, splits, layout, tuple(skipped), ignored)
    _check_classes(dataset)
    return _with_duplicate_warnings(dataset)


# -- layout ----------------------------------------------------------------------------


def _visible_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _find_split_dirs(root: Path) -> dict[str, Path]:
    by_name = {p.name.lower(): p for p in _visible_dirs(root)}
    if "train" not in by_name:
        return {}
    out: dict[str, Path] = {}
    for split, aliases in _SPLIT_ALIASES.items():
        for alias in aliases:
            if alias in by_name:
                out[split] = by_name[alias]
                break
    return out


def _list_classes(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in _visible_dirs(folder)}


def _image_files(folder: Path) -> tuple[list[Path], int]:
    """Image files under `folder` (recursive, hidden skipped) and the count ignored."""
    found: list[Path] = []
    ignored = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if is_image_name(name):
                found.append(_absolute(Path(dirpath, name)))
            else:
                ignored += 1
    return found, ignored


def _absolute(path: Path) -> Path:
    """`path` resolved; a symlink loop (RuntimeError before Python 3.13) or a dangling
    link keeps its own absolute name, so probing reports the file the user sees."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()
    return resolved if resolved.exists() else path.absolute()


# -- probing ---------------------------------------------------------------------------


def _probe(path: Path) -> tuple[str | None, str | None]:
    """(sha1, None) for a file whose header Pillow reads, else (None, reason)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:  # a video or disk image named .jpg: never read into memory
            return None, f"{size / 1e6:,.0f} MB is larger than the {MAX_FILE_BYTES / 1e6:,.0f} MB limit for one image file"
        data = path.read_bytes()
    except OSError as exc:
        return None, f"cannot read ({exc.strerror or exc})"
    if not data:
        return None, "empty file (0 bytes)"
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError:  # Pillow's own guard, above ~179 megapixels
        return None, f"larger than the {MAX_PIXELS:,}-pixel limit (possible decompression bomb)"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None, "not a readable image (unknown or corrupt format)"
    if width * height > MAX_PIXELS:
        return None, f"{width}x{height} is larger than the {MAX_PIXELS:,}-pixel limit"
    return hashlib.sha1(data).hexdigest(), None


def _probe_all(paths: list[Path], threads: int | None) -> tuple[dict[Path, str], list[Skipped]]:
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        results = list(pool.map(_probe, paths))
    ok = {p: digest for p, (digest, _) in zip(paths, results) if digest}
    bad = [Skipped(p, reason) for p, (digest, reason) in zip(paths, results) if not digest and reason]
    return ok, bad


# -- splitting -------------------------------------------------------------------------


def split_counts(n: int, val_split: float, test_split: float) -> tuple[int, int, int]:
    """(train, val, test) image counts for a class of `n` images.

    Rounded fractions, but a non-zero fraction gets at least one image while train keeps
    at least one: 10 images at 80/10/10 -> (8, 1, 1); 2 -> (1, 1, 0); 1 -> (1, 0, 0).
    """
    n_val = max(1, round(n * val_split)) if val_split > 0 else 0
    n_test = max(1, round(n * test_split)) if test_split > 0 else 0
    n_val = min(n_val, max(0, n - 1))
    n_test = min(n_test, max(0, n - 1 - n_val))
    return n - n_val - n_test, n_val, n_test


def _stratified(
    by_class: dict[int, list[Sample]], val_split: float, test_split: float, seed: str
) -> tuple[dict[int, list[Sample]], dict[int, list[Sample]], dict[int, list[Sample]]]:
    train: dict[int, list[Sample]] = {}
    val: dict[int, list[Sample]] = {}
    test: dict[int, list[Sample]] = {}
    for label, samples in sorted(by_class.items()):
        ordered = sorted(samples, key=lambda s: str(s.path))
        random.Random(f"{seed}:{label}").shuffle(ordered)
        n_train, n_val, _ = split_counts(len(ordered), val_split, test_split)
        train[label] = ordered[:n_train]
        val[label] = ordered[n_train : n_train + n_val]
        test[label] = ordered[n_train + n_val :]
    return train, val, test


def _take(items: list[Any], n: int, seed: str) -> list[Any]:
    """A seeded choice of `n` of `items` (Samples or paths), in their original order."""
    if len(items) <= n:
        return items
    chosen = list(items)
    random.Random(seed).shuffle(chosen)
    keep = set(map(id, chosen[:n]))
    return [item for item in items if id(item) in keep]


# -- checks ----------------------------------------------------------------------------


def _check_fractions(val_split: float, test_split: float) -> None:
    for name, value in (("val split", val_split), ("test split", test_split)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"the {name} must be a fraction in [0, 1), got {value}; e.g. --val-split 0.1")
    if val_split + test_split >= 1.0:
        raise DataError(f"val split + test split = {val_split + test_split:.2f} leaves no training images; keep their sum below 1")


def _check_label_count(root: Path, labels: tuple[str, ...]) -> None:
    for label in labels:
        try:
            label.encode("utf-8")
        except UnicodeEncodeError:  # bytes the file system kept as surrogates
            shown = label.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
            raise DataError(
                f"the class folder name {shown!r} in {root} is not valid UTF-8, so it cannot be a label "
                "in labels.txt and the model's metadata; rename the folder (e.g. with convmv)"
            ) from None
    if len(labels) < 2:
        found = f" (found only {labels[0]!r})" if labels else ""
        raise DataError(
            f"{root} has {len(labels)} class folder(s){found}; a classifier needs at least 2. "
            f"Put each class's images in its own sub-folder, e.g. {root}/cat/*.jpg and {root}/dog/*.jpg"
        )


def _check_classes(dataset: Dataset) -> None:
    counts = dataset.counts()
    empty = [name for name in dataset.labels if counts["train"].get(name, 0) == 0]
    if empty:
        where = "train/" if dataset.layout == "presplit" else "its folder"
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DataError(
            f"class(es) {empty} have no usable training images in {where} under {dataset.root} "
            f"(images need one of: {suffixes}; see the skipped files, if any). "
            "Add images to those folders or remove them"
        )


def _with_duplicate_warnings(dataset: Dataset) -> Dataset:
    where: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for split in SPLITS:
        for sample in dataset.splits.get(split, ()):
            where[sample.digest].append((split, sample.path))
    groups = tuple(tuple(p for _, p in hits) for hits in where.values() if len({s for s, _ in hits}) > 1)
    if not groups:
        return dataset
    examples = "; ".join(" = ".join(p.name for p in g) for g in groups[:3])
    warning = (
        f"{len(groups)} image(s) appear in more than one split (identical files, e.g. {examples}): "
        "validation and test accuracy will be optimistic (leakage). Remove the copies"
    )
    return replace(dataset, warnings=dataset.warnings + (warning,), duplicate_groups=groups)
