"""Edge commands: predict, run, bench, collect. Never imports TensorFlow or trainer."""

from __future__ import annotations

from typing import Any, Callable

import typer


def register(app: typer.Typer, wrap: Callable[[Any], Any]) -> None:
    """Add the edge commands to `app`; `wrap` maps domain errors to exit codes."""

    @app.command()
    @wrap
    def predict() -> None:
        """Classify image files with a bundle or .tflite."""
        raise typer.Exit(2)
