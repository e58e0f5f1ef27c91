"""Write a bundle folder so that it is either complete or absent.

Files go into a hidden staging folder beside the target (same filesystem, so the final
rename is atomic), each written with `edge.atomic` (temporary name, fsync, rename).
Only when every file is there does the staging folder take the target's place. With ``force`` an existing bundle
is moved aside first and deleted only after the new one is in place; if anything fails,
it is moved back. An interrupted export leaves no partial file at the target.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType

from edge.atomic import fsync_dir, umask_mode, write_bytes
from trainer.errors import ExportError

#: A staging folder untouched this long belongs to a killed process, not a running one.
STALE_AFTER_S = 15 * 60


def remove_stale(parent: Path, pattern: str, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete hidden staging folders matching `pattern` in `parent` that a killed run left
    behind (not modified for `max_age_s` seconds); return what was removed."""
    removed = []
    now = time.time()
    for path in parent.glob(pattern) if parent.is_dir() else ():
        try:
            if path.is_dir() and not path.is_symlink() and now - path.stat().st_mtime > max_age_s:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        except OSError:
            continue
    return removed


def recover_interrupted(target: Path) -> None:
    """Undo what a `--force` export killed between its two renames left: the old bundle
    moved aside (``.NAME.old-*/bundle``) and nothing at the target. Put the old one back;
    delete aside-copies that the completed commit no longer needs."""
    for aside in sorted(target.parent.glob(f".{target.name}.old-*")) if target.parent.is_dir() else ():
        kept = aside / "bundle"
        if not os.path.lexists(target) and kept.is_dir():
            os.replace(kept, target)
        shutil.rmtree(aside, ignore_errors=True)
    remove_stale(target.parent, f".{target.name}.partial-*")


def _occupied(path: Path) -> bool:
    """True when `path` exists and is not an empty folder."""
    if not os.path.lexists(path):
        return False
    return not (path.is_dir() and not path.is_symlink() and not any(path.iterdir()))


def check_target(target: Path, force: bool) -> None:
    """Fail early (before minutes of conversion) when `target` cannot be written."""
    if os.path.lexists(target) and not target.is_dir():
        raise ExportError(f"{target} exists and is not a folder; choose another --out")
    if _occupied(target) and not force:
        raise ExportError(f"A bundle already exists at {target}; pass --force to replace it, or choose another --out")


class BundleStaging:
    """A staging folder that becomes `target` on `commit()` and vanishes otherwise.

    >>> with BundleStaging(Path("models/x"), force=False) as stage:
    ...     stage.write("model.tflite", data)
    ...     stage.commit()
    """

    def __init__(self, target: Path, force: bool) -> None:
        self.target = Path(target)
        self.force = force
        self.dir: Path | None = None
        self.committed = False

    def __enter__(self) -> "BundleStaging":
        try:
            recover_interrupted(self.target)
        except OSError as exc:
            raise ExportError(f"Cannot tidy what an interrupted export left beside {self.target}: {exc.strerror or exc}") from None
        check_target(self.target, self.force)
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.dir = Path(tempfile.mkdtemp(dir=self.target.parent, prefix=f".{self.target.name}.partial-"))
            os.chmod(self.dir, umask_mode(0o777))
        except OSError as exc:
            raise ExportError(f"Cannot create the bundle folder next to {self.target}: {exc.strerror or exc}") from None
        return self

    def write(self, name: str, data: bytes) -> Path:
        """Write one file of the bundle (atomically) and return its staged path."""
        if self.dir is None:
            raise RuntimeError("BundleStaging.write outside its `with` block")
        path = self.dir / name
        try:
            write_bytes(path, data)
        except OSError as exc:
            raise ExportError(f"Cannot write {name} of the bundle: {exc.strerror or exc}; check free disk space") from None
        return path

    def commit(self) -> Path:
        """Move the complete staging folder into place; return the bundle folder."""
        if self.dir is None:
            raise RuntimeError("BundleStaging.commit outside its `with` block")
        check_target(self.target, self.force)  # someone may have written it meanwhile
        old = None
        if os.path.lexists(self.target):
            old = Path(tempfile.mkdtemp(dir=self.target.parent, prefix=f".{self.target.name}.old-"))
            os.replace(self.target, old / "bundle")
        try:
            os.replace(self.dir, self.target)
        except OSError as exc:
            if old is not None:
                os.replace(old / "bundle", self.target)
                shutil.rmtree(old, ignore_errors=True)
            raise ExportError(f"Cannot move the new bundle into {self.target}: {exc.strerror or exc}") from None
        fsync_dir(self.target.parent)  # the rename itself survives a power cut
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.committed = True
        self.dir = None
        return self.target

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
