"""Lazy imports of the training extra, with an install hint instead of a traceback.

`import_in_background()` starts importing TensorFlow on a thread, so that a command can
do work that needs no TensorFlow (scanning the data, decoding images: Pillow and OpenCV
release the GIL) on the other core meanwhile; `require_tensorflow()` then waits for that
import and raises its failure as if it had imported itself.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from types import ModuleType

from edge.errors import MissingExtraError
from trainer.quiet import is_verbose, native_stderr_hidden, quiet_python_loggers

_background: threading.Thread | None = None
_background_error: BaseException | None = None
_join_lock = threading.Lock()  # a second caller waits for the first one's join


def _log_level() -> None:
    if not is_verbose():
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # C++ log: fatal only (real errors raise in Python)
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")


def import_in_background() -> None:
    """Start importing TensorFlow and Keras on a daemon thread (once; no-op when imported).

    Call it inside `trainer.quiet.quiet_command`, which hides what the import prints to
    fd 2: unlike `require_tensorflow`, the thread does not swap fd 2 itself, because the
    calling thread keeps writing to the terminal meanwhile. Until `require_tensorflow`
    returns, the caller must not import TensorFlow or Keras modules itself.
    """
    global _background, _background_error
    if "tensorflow" in sys.modules or _background is not None:
        return
    _log_level()

    def run() -> None:
        global _background_error
        try:
            import keras  # noqa: F401  (imports tensorflow first)
        except BaseException as exc:  # handed to the thread that needs the module
            _background_error = exc

    _background_error = None
    _background = threading.Thread(target=run, name="tledge-import-tensorflow", daemon=True)
    _background.start()


def _join_background() -> None:
    """Wait for a background import; raise its failure here (ImportError: the caller's hint)."""
    global _background, _background_error
    if _background is None:
        return
    with _join_lock:
        thread = _background
        if thread is None:  # another caller joined it meanwhile
            return
        thread.join()
        _background = None  # only now: a caller that finds None may use the module
        error, _background_error = _background_error, None
        if error is None:
            if "tensorflow" in sys.modules:
                quiet_python_loggers(sys.modules["tensorflow"])
            return
        # A half-imported package would make a retry fail differently: start clean.
        for name in [n for n in sys.modules if n.split(".")[0] in ("tensorflow", "keras")]:
            del sys.modules[name]
        if not isinstance(error, ImportError):
            raise error


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
    and what it prints to fd 2 while importing is hidden. Waits for an import started by
    `import_in_background`.
    """
    _join_background()
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    _log_level()
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
