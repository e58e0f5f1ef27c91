"""Ctrl-C while the CLI is still importing (a second or more on a Pi): exit 130 with one
word instead of a KeyboardInterrupt traceback from deep inside an import. Stdlib only, so
it can be installed before anything slow is imported."""

from __future__ import annotations

import signal
import sys
from typing import Any


def _interrupted_while_starting(signum: int, frame: object) -> None:
    sys.stderr.write("interrupted\n")
    raise SystemExit(130)


def guard_start_up() -> Any:
    """Install the start-up SIGINT handler; returns the previous one (None when not in
    the main thread, where there is nothing to guard). Restore it once commands are registered."""
    try:
        return signal.signal(signal.SIGINT, _interrupted_while_starting)
    except ValueError:  # imported outside the main thread
        return None
