"""Lazy imports of the training extra, with an install hint instead of a traceback.

`check_installed()` finds the packages without importing them (a command reports a
missing extra, then a mistake in its arguments, before paying for the import);
`require_tensorflow()` / `require_keras()` import them, quietly, and without matplotlib
(`matplotlib_hidden`).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from edge.errors import MissingExtraError
from trainer.quiet import is_verbose, native_stderr_hidden, quiet_python_loggers


def _log_level() -> None:
    if not is_verbose():
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # C++ log: fatal only (real errors raise in Python)
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")


def check_installed(what: str = "Training") -> None:
    """Raise `MissingExtraError` at once when TensorFlow or Keras is not installed: finding
    the packages takes microseconds, importing them seconds (a command can then report
    the missing extra before anything else without waiting for the import)."""
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return
    try:
        missing = any(importlib.util.find_spec(name) is None for name in ("tensorflow", "keras"))
    except (ImportError, ValueError):  # a finder that refuses the name, or a half-imported module
        missing = True
    if missing:
        raise MissingExtraError("train", what)


def require_tensorflow(what: str = "Training") -> ModuleType:
    """Import and return `tensorflow`, or raise `MissingExtraError` naming the extra.

    Unless `--verbose` (trainer.quiet), TensorFlow's C++ log is limited to fatal errors
    and what it prints to fd 2 while importing is hidden.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    _log_level()
    try:
        with native_stderr_hidden(), matplotlib_hidden():
            import tensorflow as tf
    except ImportError:
        raise MissingExtraError("train", what) from None
    quiet_python_loggers(tf)
    return tf


class _NoMatplotlib(importlib.abc.MetaPathFinder):
    """Refuses matplotlib's modules, as if it were not installed."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"{name} is not imported while TensorFlow imports (trainer.deps)")
        return None


@contextmanager
def matplotlib_hidden() -> Iterator[None]:
    """Keep matplotlib out of TensorFlow's import. TensorFlow imports Keras, and Keras'
    plotting utilities (keras.visualization, which tledge does not use) import
    matplotlib.pyplot if they can: about a second of CPU on the 2-core machine, in every
    `tledge train` and `tledge export`, where the features or the calibration need that
    core. Keras treats the module as missing, so those utilities are unavailable in
    tledge's processes; tledge's own pictures (trainer.plots) import matplotlib when they
    are drawn. Nothing is hidden when matplotlib is already imported."""
    if "matplotlib" in sys.modules:
        yield
        return
    finder = _NoMatplotlib()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def require_keras(what: str = "Training") -> ModuleType:
    require_tensorflow(what)
    import keras

    return keras
