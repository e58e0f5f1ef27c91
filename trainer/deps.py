"""Lazy imports of the training extra, with an install hint instead of a traceback."""

from __future__ import annotations

import os
from types import ModuleType

from edge.errors import MissingExtraError


def require_tensorflow(what: str = "Training") -> ModuleType:
    """Import and return `tensorflow`, or raise `MissingExtraError` naming the extra."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ banner quiet
    try:
        import tensorflow as tf
    except ImportError:
        raise MissingExtraError("train", what) from None
    return tf


def require_keras(what: str = "Training") -> ModuleType:
    require_tensorflow(what)
    import keras

    return keras
