"""`tledge train`, `tledge evaluate` (owned by the trainer)."""

from __future__ import annotations

from typing import Any, Callable

import typer


def register(app: typer.Typer, wrap: Callable[[Any], Any]) -> None:
    @app.command()
    @wrap
    def train() -> None:
        """Fine-tune a frozen ImageNet backbone on a folder of class folders."""
        from trainer.deps import require_tensorflow

        require_tensorflow("tledge train")
        raise typer.Exit(2)
