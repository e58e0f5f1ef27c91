"""Progress bars and messages for training, on stderr (stdout stays clean for --json)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter:
    """Messages and rich progress bars; `quiet` hides progress and info, never warnings."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True)  # sys.stderr looked up on each write (trainer.quiet swaps it)
        self.warnings: list[str] = []

    def info(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False, markup=False)

    def warn(self, text: str) -> None:
        """Recorded for the run's report and always shown."""
        self.warnings.append(text)
        self.console.print(f"warning: {text}", style="yellow", highlight=False, markup=False)

    @contextmanager
    def task(self, description: str, total: int, unit: str = "") -> Iterator[Callable[..., None]]:
        """A progress bar; yields `advance(n=1, **fields)`."""
        if self.quiet or total <= 0:
            yield lambda n=1, **_: None
            return
        columns = [
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn(unit),
            TextColumn("{task.fields[extra]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(description, total=total, extra="")

            def advance(n: int = 1, **fields: Any) -> None:
                extra = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
                progress.update(task_id, advance=n, extra=extra)

            yield advance
