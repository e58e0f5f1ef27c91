"""`tledge export` (owned by the exporter)."""

from __future__ import annotations

from typing import Any, Callable

import typer


def register(app: typer.Typer, wrap: Callable[[Any], Any]) -> None:
    @app.command()
    @wrap
    def export() -> None:
        """Convert a training run to a verified, self-describing .tflite bundle."""
        from trainer.deps import require_tensorflow

        require_tensorflow("tledge export")
        raise typer.Exit(2)
