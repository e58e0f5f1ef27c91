"""`tledge label DIR --to DATA`: file the frames `run --save-uncertain DIR` kept into a dataset.

Interactive by default: for each frame (oldest first) the file name, why it was kept and
the model's top labels are shown, and a label is asked for. Enter skips the frame (it
stays in DIR), `-` discards it, `q` quits; a label that is neither in DATA nor the
model's asks for confirmation first (a typo would start a new class). `--accept-top`
asks nothing and files every frame under the model's top-1 label (for scripts).
"""

from __future__ import annotations

from pathlib import Path

import typer

from edge import inbox
from edge.errors import InboxError, TledgeError

SKIP, DISCARD, QUIT = "", "-", "q"


def label(
    inbox_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="The folder given to `run --save-uncertain`."),
    to: Path = typer.Option(..., "--to", file_okay=False, help="Dataset root: frames go to DATA/<label>/ (DATA/train/<label>/ when DATA has train/ val/ test/)."),
    accept_top: bool = typer.Option(False, "--accept-top", help="Ask nothing: file every frame under the model's top-1 label (for scripts)."),
) -> None:
    """Label saved uncertain frames into DATA/<label>/ (Enter skips, - discards, q quits)."""
    listing = inbox.list_frames(inbox_dir)
    for name, reason in listing.skipped:
        typer.secho(f"skipped: {inbox_dir / name}: {reason}", fg=typer.colors.YELLOW, err=True)
    if not listing.frames:
        typer.echo(f"tledge: no frames to label in {inbox_dir}", err=True)
        return
    counts = {"filed": 0, "discarded": 0, "skipped": 0, "failed": 0}
    total = len(listing.frames)
    for number, frame in enumerate(listing.frames, start=1):
        if accept_top:
            choice = frame.top[0][0] if frame.top else SKIP
        else:
            choice = _ask(frame, number, total, to)
        if choice == QUIT:
            break
        counts[_apply(inbox_dir, to, frame, choice)] += 1
    left = len(inbox.list_frames(inbox_dir).frames)
    typer.echo(f"tledge: filed {counts['filed']}, discarded {counts['discarded']}, skipped {counts['skipped']}, "
               f"failed {counts['failed']}; {left} frame(s) left in {inbox_dir}", err=True)
    if counts["failed"] and not counts["filed"] and not counts["discarded"]:
        raise TledgeError(f"none of the {counts['failed']} frame(s) could be filed; see the messages above")


def _apply(inbox_dir: Path, data_dir: Path, frame: inbox.SavedFrame, choice: str) -> str:
    """Carry out one answer; returns the counter it adds to."""
    if choice == SKIP:
        return "skipped"
    try:
        if choice == DISCARD:
            inbox.discard_frame(inbox_dir, frame.name)
            typer.echo(f"  discarded {frame.name}", err=True)
            return "discarded"
        target = inbox.file_frame(inbox_dir, frame.name, choice, data_dir)
    except InboxError as exc:
        typer.secho(f"  not filed: {frame.name}: {exc}", fg=typer.colors.YELLOW, err=True)
        return "failed"
    typer.echo(f"  -> {target}", err=True)
    return "filed"


def _ask(frame: inbox.SavedFrame, number: int, total: int, data_dir: Path) -> str:
    """Show one frame and read an answer until it is usable. EOF (Ctrl-D) quits."""
    reasons = ", ".join(frame.reasons) or "?"
    typer.echo(f"\n[{number}/{total}] {frame.path}  (frame {frame.sidecar.get('index', '?')}, {frame.sidecar.get('time', '?')}; {reasons})")
    for label, score in frame.top:
        typer.echo(f"    {score:6.3f}  {label}")
    known = inbox.known_labels(data_dir, tuple(label for label, _ in frame.top))
    while True:
        try:
            answer = typer.prompt("label (Enter: skip, -: discard, q: quit)", default="", show_default=False).strip()
        except typer.Abort:
            typer.echo("", err=True)
            return QUIT
        if answer in (SKIP, DISCARD, QUIT):
            return answer
        try:
            inbox.check_label(answer)
        except InboxError as exc:
            typer.secho(f"  {exc}", fg=typer.colors.YELLOW, err=True)
            continue
        if answer in known or typer.confirm(f"  {answer!r} is a new label (not in {data_dir} or the model); create it?", default=False):
            return answer
