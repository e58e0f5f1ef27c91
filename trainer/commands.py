"""Training-side commands: train, evaluate, export, demo. TensorFlow is imported inside
each command (through trainer.deps), never at module import."""

from __future__ import annotations

from typing import Any, Callable

import typer


def register(app: typer.Typer, wrap: Callable[[Any], Any]) -> None:
    """Add the training-side commands to `app`; `wrap` maps domain errors to exit codes."""
    from trainer import cli_demo, cli_export, cli_train

    cli_train.register(app, wrap)
    cli_export.register(app, wrap)
    cli_demo.register(app, wrap)
