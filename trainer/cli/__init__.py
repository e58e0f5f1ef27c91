"""The training commands, registered into the `tledge` CLI root (`edge.cli`): `train` and
`evaluate` (trainer.cli.train), `export` (trainer.cli.export), `demo` (trainer.cli.demo). Importing this module loads Typer and light option modules only;
TensorFlow is imported inside each command (through trainer.deps)."""

from __future__ import annotations

from typing import Any, Callable

import typer


def register(app: typer.Typer, wrap: Callable[[Any], Any]) -> None:
    """Add the training commands to `app`; `wrap` maps domain errors to exit codes."""
    from trainer.cli import demo, export, train

    train.register(app, wrap)
    export.register(app, wrap)
    demo.register(app, wrap)
