"""The `tledge` command line. Thin: parse options, call the library, turn `TledgeError`
into a clear message and exit code 1. Training commands import TensorFlow lazily, so
every edge command works where only the core package is installed."""

from __future__ import annotations

import signal
import sys


def _interrupted_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C while the CLI is still importing (a second or more on a Pi): exit 130 with
    one word instead of a KeyboardInterrupt traceback from deep inside an import."""
    sys.stderr.write("interrupted\n")
    raise SystemExit(130)


def _guard_start_up() -> Any:
    try:
        return signal.signal(signal.SIGINT, _interrupted_while_starting)
    except ValueError:  # imported outside the main thread: nothing to guard
        return None


_PREVIOUS_SIGINT = _guard_start_up()

import functools  # noqa: E402 - after the guard: these imports are the slow part
from typing import Any, Callable, TypeVar  # noqa: E402

import typer  # noqa: E402

from edge.errors import TledgeError  # noqa: E402

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
if _PREVIOUS_SIGINT is not None:
    signal.signal(signal.SIGINT, _PREVIOUS_SIGINT)  # from here on handle_errors / click handle Ctrl-C


def main() -> None:
    """Console-script entry point."""
    app(prog_name="tledge")


if __name__ == "__main__":
    sys.exit(main())
