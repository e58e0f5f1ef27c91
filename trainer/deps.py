"""Lazy imports of the training extra, with an install hint instead of a traceback."""

from __future__ import annotations

import os
import sys
from types import ModuleType

from edge.errors import MissingExtraError
from trainer.quiet import is_verbose, native_stderr_hidden, quiet_python_loggers


def require_tensorflow(what: str = "Training") -> ModuleType:
    """Import and return `tensorflow`, or raise `MissingExtraError` naming the extra.

    Unless `--verbose` (trainer.quiet), TensorFlow's C++ log is limited to fatal errors
    and what it prints to fd 2 while importing is hidden.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    if not is_verbose():
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # C++ log: fatal only (real errors raise in Python)
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    try:
        with native_stderr_hidden():
            import tensorflow as tf
    except ImportError:
        raise MissingExtraError("train", what) from None
    quiet_python_loggers(tf)
    return tf


def require_keras(what: str = "Training") -> ModuleType:
    require_tensorflow(what)
    import keras

    return keras
