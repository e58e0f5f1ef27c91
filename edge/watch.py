"""Safe hot update: `tledge run MODEL_DIR --watch`.

A watcher thread polls MODEL_DIR and, when a new bundle is there, loads it *beside* the
running one, checks its checksums and its self-test on a fresh interpreter, and hands it
to the pipeline, which swaps models between two frames (`Pipeline.swap`): the stream
never stops and no frame is skipped. A bundle that fails stays unused; the old model
keeps running and the failure is reported on stderr and as an event to the sinks.

MODEL_DIR may be laid out three ways (checked in this order, at every poll):

    MODEL_DIR/current -> v2/     a `current` symlink, switched to another bundle folder
    MODEL_DIR/manifest.json      MODEL_DIR is itself a bundle, replaced by a folder rename
                                 (or MODEL_DIR is a symlink that is switched)
    MODEL_DIR/<bundle>/...       a folder where bundles arrive (`tledge deploy`, rsync,
                                 scp); the newest arrival is used. Hidden names (staging
                                 folders, rsync's temporary files) are ignored.

Never load a half-copied bundle: a candidate is only opened after nothing in its folder
has changed for `settle_s` seconds (sizes, times, inodes of every entry), and then only
if the model's and the self-test's sha256 match the manifest: a copy still in progress
fails that check. A bundle that fails is reported once; it is tried again when its files
change.

Events (dicts, delivered by the pipeline to every sink with `on_event`; as JSON lines on
stdout by `EventLinesSink`):

    {"event": "model_update", "status": "swapped", "bundle": ..., "model": ..., "previous": ...,
     "selftest": ..., "schema_changed": false, "changes": {}, "last_frame_before": 41}
    {"event": "model_update", "status": "rejected", "bundle": ..., "model": <still running>,
     "error": "..."}
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np

from edge.bundle import MANIFEST_NAME, ModelInfo, load_model_info, sha256_bytes
from edge.classifier import Classifier
from edge.errors import ModelError, TledgeError
from edge.results import FrameResult
from edge.selftest import no_selftest_note, verify_classifier

log = logging.getLogger("tledge.edge")

CURRENT_LINK = "current"
EVENT_NAME = "model_update"


class Layout(str, Enum):
    """How MODEL_DIR holds its bundle (see the module docstring)."""

    SYMLINK = "current_symlink"
    BUNDLE = "bundle_folder"
    FOLDER = "folder_of_bundles"


@dataclass(frozen=True)
class WatchOptions:
    """How the watcher polls and loads. Times in seconds."""

    poll_s: float = 0.5
    settle_s: float = 2.0  # a candidate's folder must be unchanged this long before it is opened
    threads: int | None = None
    delegate: str | None = None

    def __post_init__(self) -> None:
        if self.poll_s <= 0 or self.settle_s < 0:
            raise ValueError("poll_s must be > 0 and settle_s >= 0")


@dataclass(frozen=True)
class LoadedModel:
    """A bundle loaded and verified, ready to serve."""

    path: Path
    info: ModelInfo = field(repr=False)
    classifier: Classifier = field(repr=False)
    tag: str  # name@sha256[:12], shown as "model" in each frame's result
    selftest: str  # one line: the self-test's summary, or why there was none


def layout_of(model_dir: Path) -> Layout:
    if os.path.lexists(model_dir / CURRENT_LINK):
        return Layout.SYMLINK
    if (model_dir / MANIFEST_NAME).is_file():
        return Layout.BUNDLE
    return Layout.FOLDER


def _created(path: Path) -> tuple[str, int]:
    """Sort key for bundles in a folder: the manifest's created_utc, then its mtime."""
    manifest = path / MANIFEST_NAME
    try:
        created = json.loads(manifest.read_text(encoding="utf-8")).get("created_utc", "")
        return (str(created), manifest.stat().st_mtime_ns)
    except (OSError, ValueError, AttributeError, RecursionError):
        return ("", 0)


def candidates(model_dir: Path) -> tuple[Layout, list[Path]]:
    """The bundle folder(s) MODEL_DIR offers now, oldest first."""
    layout = layout_of(model_dir)
    if layout is Layout.SYMLINK:
        target = (model_dir / CURRENT_LINK).resolve()
        return layout, [target] if (target / MANIFEST_NAME).is_file() else []
    if layout is Layout.BUNDLE:
        return layout, [model_dir.resolve()]
    try:
        entries = [p for p in model_dir.iterdir() if not p.name.startswith(".") and p.is_dir() and (p / MANIFEST_NAME).is_file()]
    except OSError:
        return layout, []
    return layout, sorted((p.resolve() for p in entries), key=_created)


def fingerprint(path: Path) -> tuple[str, int, int]:
    """Which bundle a folder holds: its path, inode, and its manifest's change time; a
    folder renamed into place or a manifest rewritten gives a new fingerprint."""
    try:
        folder, manifest = path.stat(), (path / MANIFEST_NAME).stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), folder.st_ino, manifest.st_ctime_ns)


def signature(path: Path) -> tuple[Any, ...]:
    """Everything that changes while files are copied into `path`: each entry's name,
    size, inode, modification and change times (hidden temporary files included)."""
    rows: list[Any] = []
    try:
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            st = entry.stat(follow_symlinks=False)
            rows.append((entry.name, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
    except OSError as exc:
        rows.append(("<unreadable>", str(exc)))
    return tuple(rows)


def model_tag(info: ModelInfo) -> str:
    sha = str(info.manifest.get("model", {}).get("sha256") or sha256_bytes(info.model_bytes))
    return f"{info.name}@{sha[:12]}"


def load_verified(path: Path, threads: int | None = None, delegate: str | None = None) -> LoadedModel:
    """Open a bundle beside whatever is running: checksums, a fresh interpreter, the self-test.

    Raises `ModelError` (`BundleIntegrityError`, `SelfTestError`) with a remedy.
    """
    info = load_model_info(path)
    classifier = Classifier(info, threads=threads, delegate=delegate)
    report = verify_classifier(classifier, info)
    summary = report.summary() if report is not None else no_selftest_note(info)
    return LoadedModel(path, info, classifier, model_tag(info), summary)


def schema_changes(old: Classifier, new: Classifier) -> dict[str, Any]:
    """What a consumer of the results must know: labels added/removed/reordered, input size."""
    changes: dict[str, Any] = {}
    if tuple(old.labels) != tuple(new.labels):
        changes["labels"] = {
            "added": [label for label in new.labels if label not in old.labels],
            "removed": [label for label in old.labels if label not in new.labels],
            "before": list(old.labels),
            "after": list(new.labels),
        }
    if tuple(old.input_size) != tuple(new.input_size):
        changes["input_size"] = {"before": list(old.input_size), "after": list(new.input_size)}
    return changes


class BundleWatcher:
    """Polls MODEL_DIR in a thread; verified new bundles go to `on_ready`, failures to
    `on_rejected` (both called from the watcher thread).

    >>> watcher = BundleWatcher(Path("models"), WatchOptions())
    >>> first = watcher.load_initial()  # raises when no bundle there passes
    >>> watcher.attach(pipeline); watcher.start()  # doctest: +SKIP
    """

    def __init__(self, model_dir: Path, options: WatchOptions = WatchOptions()) -> None:
        self.model_dir = Path(model_dir)
        self.options = options
        self.current: LoadedModel | None = None
        self.on_ready: Callable[[LoadedModel, dict[str, Any]], None] = lambda loaded, event: None
        self.on_rejected: Callable[[dict[str, Any]], None] = lambda event: None
        self._current_fp: tuple[str, int, int] | None = None
        self._consumed: set[tuple[str, int, int]] = set()  # folder layout: present at start or already used
        self._rejected: dict[tuple[str, int, int], tuple[Any, ...]] = {}  # fingerprint -> signature when it failed
        self._settling: dict[tuple[str, int, int], tuple[tuple[Any, ...], float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- start-up -----------------------------------------------------------------
    def load_initial(self) -> LoadedModel:
        """The bundle to start with (the newest that passes, in a folder of bundles)."""
        if not self.model_dir.is_dir():
            raise ModelError(f"{self.model_dir} is not a folder; --watch needs a bundle folder, a folder with a `current` symlink, or a folder of bundles")
        layout, paths = candidates(self.model_dir)
        errors = []
        for path in reversed(paths):  # newest first
            try:
                loaded = load_verified(path, self.options.threads, self.options.delegate)
            except TledgeError as exc:
                errors.append(str(exc))
                log.warning("not using %s: %s", path, exc)
                continue
            self.current = loaded
            self._current_fp = fingerprint(path)
            if layout is Layout.FOLDER:
                self._consumed = {fingerprint(p) for p in paths}
            return loaded
        if errors:
            raise ModelError(errors[0] if len(errors) == 1 else f"none of the {len(errors)} bundles in {self.model_dir} passed its checks; the newest: {errors[0]}")
        raise ModelError(f"{self.model_dir} holds no bundle yet (no manifest.json, `current` link or bundle folder); deploy one with `tledge deploy BUNDLE {self.model_dir}`")

    # -- wiring ---------------------------------------------------------------------
    def attach(self, pipeline: Any) -> None:
        """Route verified bundles to `pipeline.swap` and failures to `pipeline.post_event`."""
        if self.current is not None:
            pipeline.model_tag = self.current.tag

        def ready(loaded: LoadedModel, event: dict[str, Any]) -> None:
            pipeline.swap(loaded.classifier, loaded.tag, event)

        self.on_ready = ready
        self.on_rejected = pipeline.post_event

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tledge-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)

    def __enter__(self) -> "BundleWatcher":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.options.poll_s):
            try:
                self.poll()
            except Exception as exc:  # the watcher must never take the stream down
                log.warning("watching %s failed this time: %s", self.model_dir, exc)

    def poll(self, now: float | None = None) -> None:
        """One look at MODEL_DIR: settle, verify and hand over what is new."""
        now = time.monotonic() if now is None else now
        layout, paths = candidates(self.model_dir)
        for path in paths:
            fp = fingerprint(path)
            if fp == self._current_fp or (layout is Layout.FOLDER and fp in self._consumed):
                continue
            sig = signature(path)
            if self._rejected.get(fp) == sig:
                continue  # failed in exactly this state; tried again when it changes
            seen = self._settling.get(fp)
            if seen is None or seen[0] != sig:
                self._settling[fp] = (sig, now)
                if self.options.settle_s > 0:
                    continue
            elif now - seen[1] < self.options.settle_s:
                continue
            self._settling.pop(fp, None)
            self._try(path, fp, sig)

    def _try(self, path: Path, fp: tuple[str, int, int], sig: tuple[Any, ...]) -> None:
        log.warning("new bundle at %s: verifying checksums and self-test", path)
        try:
            loaded = load_verified(path, self.options.threads, self.options.delegate)
        except TledgeError as exc:
            self._rejected[fp] = sig
            event = {"event": EVENT_NAME, "status": "rejected", "bundle": str(path), "model": self.current.tag if self.current else None, "error": str(exc)}
            log.warning("bundle %s rejected, still running %s: %s", path, event["model"], exc)
            self.on_rejected(event)
            return
        changes = schema_changes(self.current.classifier, loaded.classifier) if self.current else {}
        event = {
            "event": EVENT_NAME, "status": "swapped", "bundle": str(path), "model": loaded.tag,
            "previous": self.current.tag if self.current else None, "selftest": loaded.selftest,
            "schema_changed": bool(changes), "changes": changes,
        }
        log.warning("swapping to %s (%s)%s", loaded.tag, loaded.selftest, "; the output schema changed" if changes else "")
        self.current, self._current_fp = loaded, fp
        self._consumed.add(fp)
        self.on_ready(loaded, event)


class EventLinesSink:
    """Writes the pipeline's events (hot updates) as JSON lines beside the frame lines;
    ignores frames. Any sink may take events the same way, by an `on_event(event)` method
    (the live view can show them)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout

    def emit(self, frame_rgb: np.ndarray, result: FrameResult) -> None:
        pass

    def on_event(self, event: dict[str, Any]) -> None:
        try:
            self.stream.write(json.dumps(event, ensure_ascii=False) + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # the frame sink reports a closed output and stops the run

    def close(self) -> None:
        pass
