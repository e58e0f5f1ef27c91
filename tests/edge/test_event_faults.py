"""Event outputs under faults: a queue folder on a full filesystem (a real tmpfs), temp
files a crash left in a queue folder, and the stop reason the last end event carries."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.bundle import load_model_info
from edge.classifier import Classifier
from edge.decision import DecisionPolicy
from edge.events import Event, EventOptions, EventsSink, EventTracker
from edge.outputs.queue import DiskQueue
from edge.pipeline import Pipeline, PipelineOptions, StopReason, stop_on_signals
from edge.sources import VideoFileSource

ROOT = Path(__file__).resolve().parents[2]


# -- stale temp files ------------------------------------------------------------------------
def test_partial_writes_left_by_a_crash_are_removed_when_the_queue_opens(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    first = DiskQueue(folder)
    tracker = EventTracker(EventOptions(hold=1))
    events = tracker.feed("bees", 0.9, 0, 1.0) + tracker.feed("wasps", 0.9, 1, 2.0)
    assert first.put_many([e.to_dict() for e in events]) == 3  # start bees, end bees, start wasps
    first.close()
    # What a crash between writing and renaming leaves: temp files that never became records.
    (folder / ".00000000000000000003.json.tmp").write_bytes(b'{"event": "sta')
    (folder / ".00000000000000000004.json.tmp").write_bytes(b"")
    again = DiskQueue(folder)
    assert again.removed_partial == 2 and again.recovered == 3
    assert not list(folder.glob("*.tmp")) and len(list(folder.glob("*.json"))) == 3
    assert again.peek()[1]["id"] == events[0].id  # the records themselves are untouched
    again.close()


def test_partial_writes_of_a_queue_in_use_are_not_touched(tmp_path: Path) -> None:
    from edge.errors import EventOutputError

    folder = tmp_path / "q"
    owner = DiskQueue(folder)
    partial = folder / ".00000000000000000000.json.tmp"
    partial.write_bytes(b"{")  # the owner's write in progress
    with pytest.raises(EventOutputError, match="in use"):
        DiskQueue(folder)
    assert partial.exists()
    owner.close()


# -- the stop reason ---------------------------------------------------------------------------
class Collect:
    """An event output that keeps what it gets (the sink's own contract, no network)."""

    name = "collect"

    def __init__(self) -> None:
        self.events: list[Event] = []

    def submit(self, event: Event) -> None:
        self.events.append(event)

    def close(self, deadline: float) -> dict[str, Any]:
        return {"line": ""}


class SignalAt:
    """A sink that sends this process SIGINT at frame `index` (a real Ctrl-C, delivered
    to the handler `stop_on_signals` installs)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def emit(self, frame_rgb: Any, result: Any) -> None:
        if result.index == self.index:
            os.kill(os.getpid(), signal.SIGINT)

    def close(self) -> None:
        pass


def _run(bundle: Path, video: Path, extra: list[Any], **options: Any) -> tuple[Any, list[Event]]:
    info = load_model_info(bundle)
    classifier = Classifier(info, threads=1)
    collect = Collect()
    sink = EventsSink([collect], EventOptions(hold=2, device="door"))
    pipeline = Pipeline(classifier, VideoFileSource(video), [sink, *extra],
                        PipelineOptions(decision=DecisionPolicy.for_model(classifier.labels, info.manifest), **options))
    with stop_on_signals(pipeline):
        stats = pipeline.run()
    return stats, collect.events


@pytest.mark.parametrize(("how", "reason"), [("end", "end_of_input"), ("max_frames", "max_frames"), ("ctrl_c", "interrupted")])
def test_the_last_end_event_says_why_the_run_stopped(colour_bundle, colour_video, how: str, reason: str) -> None:
    extra = [SignalAt(12)] if how == "ctrl_c" else []
    options = {"max_frames": 12} if how == "max_frames" else {}
    stats, events = _run(colour_bundle, colour_video[0], extra, **options)
    assert stats.stop_reason == StopReason(reason)
    last = events[-1]
    assert last.kind.value == "end" and last.reason == reason
    assert all(e.reason == "changed" for e in events[:-1])
    if how != "end":  # stopped early: the run ended inside the second colour (frames 8-15)
        assert last.label == "green" and stats.frames < len(colour_video[1])


# -- a full filesystem ------------------------------------------------------------------------
_CHILD = r'''
import errno, json, logging, os, subprocess, sys, time
from pathlib import Path

sys.path[:0] = [sys.argv[5]]
mnt, bundle, video, url = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")


def fill(path):
    """Write zeros until the filesystem says ENOSPC."""
    with open(path, "wb", buffering=0) as handle:
        while True:
            try:
                handle.write(b"\0" * 4096)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return


out = {}
# 1. Starting on a full disk: tledge run refuses with a clear error, exit 1.
(mnt / "q1").mkdir()
fill(mnt / "filler")
cli = subprocess.run([sys.executable, "-m", "edge.cli", "run", bundle, "--source", video, "--display", "off",
                      "--webhook", url, "--device", "full", "--queue-dir", str(mnt / "q1")], capture_output=True, text=True)
out["cli"] = {"rc": cli.returncode, "stderr": cli.stderr}
(mnt / "filler").unlink()

# 2. The disk fills up during the run: every event is counted as lost, the run goes on.
from edge.bundle import load_model_info
from edge.classifier import Classifier
from edge.decision import DecisionPolicy
from edge.outputs.setup import OutputsConfig, build_events_sink
from edge.pipeline import Pipeline, PipelineOptions
from edge.sources import VideoFileSource

sink = build_events_sink(OutputsConfig(device="full", webhook_url=url, queue_dir=mnt / "q2", hold=2, flush_timeout_s=1.0))
fill(mnt / "filler")
info = load_model_info(Path(bundle))
clf = Classifier(info, threads=1)
stats = Pipeline(clf, VideoFileSource(video), [sink], PipelineOptions(decision=DecisionPolicy.for_model(clf.labels, info.manifest))).run()
summary = {k: v for k, v in sink.summaries["webhook"].items()}
out["run"] = {"frames": stats.frames, "reason": stats.reason, "summary": summary,
              "records_on_disk": len(list((mnt / "q2" / "webhook").glob("*.json")))}
print(json.dumps(out))
'''


def _tmpfs_prefix(probe_dir: Path) -> tuple[list[str] | None, str]:
    """The command prefix that runs a shell in a private mount namespace where it may mount
    a tmpfs (root: `unshare -m`; others: `unshare -rm`, a user namespace), or the reason not."""
    unshare, mount = shutil.which("unshare"), shutil.which("mount")
    if unshare is None or mount is None:
        return None, "unshare/mount (util-linux) are not installed"
    prefix = [unshare, "-m"] if os.geteuid() == 0 else [unshare, "-rm"]
    probe = subprocess.run([*prefix, "sh", "-c", 'mount -t tmpfs -o size=64k tledge-probe "$1"', "sh", str(probe_dir)],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return None, f"cannot mount a private tmpfs here ({' '.join(prefix)}: {probe.stderr.strip() or probe.returncode})"
    return prefix, ""


def test_a_queue_folder_on_a_full_filesystem_is_counted_and_logged_never_a_crash(colour_bundle, colour_video, tmp_path: Path) -> None:
    from broker import free_port

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    prefix, why = _tmpfs_prefix(mnt)
    if prefix is None:
        pytest.skip(why)
    child = tmp_path / "child.py"
    child.write_text(_CHILD)
    url = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens: every event must stay in the queue
    script = 'mount -t tmpfs -o size=64k tledge-full "$1" && shift && exec "$@"'
    result = subprocess.run([*prefix, "sh", "-c", script, "sh", str(mnt), sys.executable, str(child), str(mnt), str(colour_bundle),
                             str(colour_video[0]), url, str(ROOT)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = json.loads(result.stdout)
    # At start: exit 1, the folder named, the remedy given, no traceback.
    assert out["cli"]["rc"] == 1, out["cli"]["stderr"]
    assert "No space left on device" in out["cli"]["stderr"] and "--queue-dir" in out["cli"]["stderr"]
    assert "Traceback" not in out["cli"]["stderr"]
    # During the run: 4 colours, hold 2 -> 4 starts and 4 ends, none could be queued.
    run = out["run"]
    assert run["frames"] == len(colour_video[1]) and run["reason"] == "end of input"
    summary = run["summary"]
    assert summary["submitted"] == 8 and summary["write_failed"] == 8 and summary["delivered"] == 0
    assert summary["queued"] == 0 and summary["unsaved"] == 0 and run["records_on_disk"] == 0
    assert "8 lost to queue write errors" in summary["line"]
    assert "cannot write an event (No space left on device)" in result.stderr
