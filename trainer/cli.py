"""The `tledge` command line. Thin: parse options, call the library, turn `TledgeError`
into a clear message and exit code 1. Training commands import TensorFlow lazily, so
every edge command works where only the core package is installed."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import typer

from edge.errors import TledgeError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="tledge",
    help="Train a small image classifier, export a verified quantized .tflite bundle, run it at the edge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` to stderr and return the Exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn domain errors into exit code 1, Ctrl-C into 130; never a traceback for users."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TledgeError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            typer.secho("interrupted", fg=typer.colors.YELLOW, err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _register() -> None:
    from edge.cli import register as register_edge
    from trainer import commands

    commands.register(app, handle_errors)
    register_edge(app, handle_errors)


_register()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="tledge")


if __name__ == "__main__":
    sys.exit(main())
