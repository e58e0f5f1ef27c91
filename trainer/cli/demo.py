"""`tledge demo`: the main job end to end on built-in data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from trainer.cli.options import VerboseOpt


def register(app: typer.Typer, wrap: Callable[[Any], Any]) -> None:
    @app.command()
    @wrap
    def demo(
        work_dir: Path = typer.Option(Path("runs/demo"), "--work-dir", help="Where the data, run, bundle and video go."),
        weights: Optional[str] = typer.Option(
            None, "--weights", help="imagenet | none | PATH to an .h5 file. Default: $TLEDGE_WEIGHTS, else imagenet (Keras cache, then download)."
        ),
        image_size: int = typer.Option(96, "--image-size", min=96, max=224, help="Model input, pixels."),
        images_per_class: int = typer.Option(80, "--images-per-class", min=8, help="Training images drawn per class."),
        quiet: bool = typer.Option(False, "--quiet", help="Only the summary."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
        verbose: bool = VerboseOpt,
    ) -> None:
        """Draw a dataset, train, export int8, verify it, classify a generated video, summarise."""
        from trainer.deps import require_tensorflow
        from trainer.quiet import quiet_command

        with quiet_command(verbose):
            require_tensorflow("tledge demo")
            from trainer.demo import DemoOptions, run_demo, summary_lines

            summary = run_demo(DemoOptions(work_dir=work_dir, weights=weights, image_size=image_size, images_per_class=images_per_class, quiet=quiet))
        if as_json:
            typer.echo(json.dumps(summary))
        else:
            for line in summary_lines(summary):
                typer.echo(line)
