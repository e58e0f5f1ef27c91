"""Options shared by several training commands."""

from __future__ import annotations

import typer

DataRootOpt = typer.Option(
    None, "--data-root", file_okay=False,
    help="Where the run's images are now, if they moved since training (default: the folder recorded in splits.json).",
)
VerboseOpt = typer.Option(False, "--verbose", help="Also show TensorFlow's own log and converter output.")
