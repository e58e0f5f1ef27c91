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
from contextlib import AbstractContextManager, contextmanager
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


class _Hidden(importlib.abc.MetaPathFinder):
    """Refuses the modules of `packages`, as if they were not installed."""

    def __init__(self, packages: tuple[str, ...]) -> None:
        self.packages = packages

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in self.packages:
            raise ModuleNotFoundError(f"{name} is not imported here (trainer.deps.hidden)", name=name)
        return None


@contextmanager
def hidden(*packages: str) -> Iterator[None]:
    """For the block, importing any of `packages` (top-level names) fails with
    ModuleNotFoundError, as if it were not installed; one already imported is not hidden.
    For libraries that import a heavy optional dependency they only need for features
    tledge does not use (`matplotlib_hidden`, trainer.export.metadata). Process-wide while
    it lasts: for imports made before any worker thread could import those packages."""
    names = tuple(p for p in packages if p not in sys.modules)
    if not names:
        yield
        return
    finder = _Hidden(names)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def matplotlib_hidden() -> AbstractContextManager[None]:
    """Keep matplotlib out of TensorFlow's import. TensorFlow imports Keras, and Keras'
    plotting utilities (keras.visualization, which tledge does not use) import
    matplotlib.pyplot if they can: about a second of CPU on the 2-core machine, in every
    `tledge train` and `tledge export`, where the features or the calibration need that
    core. Keras treats the module as missing, so those utilities are unavailable in
    tledge's processes; tledge's own pictures (trainer.plots) import matplotlib when they
    are drawn."""
    return hidden("matplotlib")


def require_keras(what: str = "Training") -> ModuleType:
    require_tensorflow(what)
    import keras

    return keras
