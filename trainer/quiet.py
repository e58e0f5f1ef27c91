"""TensorFlow's noise kept off the terminal: a user of the training commands sees only
tledge's own output unless they pass `--verbose`.

TensorFlow and its converter write from C++ straight to file descriptor 2 (CUDA probing,
oneDNN/cudart notices, absl's pre-initialisation warning, the MLIR quantizer's
`fully_quantize: ..., inference_type: ...` lines), which neither Python's `warnings` nor
`TF_CPP_MIN_LOG_LEVEL` fully stop; the LiteRT interpreter announces its XNNPACK delegate
the same way. `native_stderr_hidden()` points fd 2 at a temporary file for the length of
a training command (and, nested, around importing TensorFlow and converting), while
Python's own `sys.stderr` (tledge's messages, progress bars, Python warnings) keeps
writing to the terminal. When the block fails unexpectedly (not a `TledgeError` with its
remedy, not Ctrl-C), what was captured is written out: a real failure keeps its context.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from edge.errors import TledgeError

#: Set to "1" by `--verbose` (inherited by child processes); anything else: quiet.
VERBOSE_ENV = "TLEDGE_VERBOSE"


def set_verbose(verbose: bool) -> None:
    """Choose, for this process and its children, whether TensorFlow may talk."""
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


@contextmanager
def quiet_command(verbose: bool) -> Iterator[None]:
    """The body of a training command: `--verbose` recorded, native output hidden unless set."""
    set_verbose(verbose)
    with native_stderr_hidden():
        yield


def _writes_to_fd2(stream: Any) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a StringIO, a test runner's capture
        return False


@contextmanager
def native_stderr_hidden() -> Iterator[None]:
    """Hide what native code writes to fd 2 during the block (see the module docstring)."""
    if is_verbose():
        yield
        return
    python_stderr: IO[str] = sys.stderr
    try:
        python_stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    saved = os.dup(2)
    swap = _writes_to_fd2(python_stderr)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        if swap:  # Python's writes (rich progress, messages) still reach the terminal
            sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(python_stderr, "encoding", None) or "utf-8", errors="backslashreplace")
        failed = True
        try:
            yield
            failed = False
        except (TledgeError, KeyboardInterrupt, SystemExit):
            failed = False  # tledge's own message says what to do; the noise would bury it
            raise
        finally:
            if swap:
                sys.stderr.close()
                sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                sink.seek(0)
                captured = sink.read()
                if captured:
                    os.write(2, captured)


def quiet_python_loggers(tf: Any) -> None:
    """TensorFlow's and absl's Python loggers: errors only (unless verbose)."""
    if is_verbose():
        return
    tf.get_logger().setLevel("ERROR")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl comes with TensorFlow; nothing to quiet without it
        pass
