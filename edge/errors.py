"""One exception tree for tledge. Every message says what went wrong *and* how to fix it.

    TledgeError                      base; the CLI turns it into exit code 1
    ├── ImageError                   one image cannot be decoded or is unsafe to decode
    ├── ModelError                   a .tflite / bundle / labels file is unusable
    │   └── BundleIntegrityError     a bundle's sha256 does not match its manifest
    ├── RuntimeMissingError          no TFLite interpreter package is installed
    ├── DelegateError                a delegate library cannot be loaded
    ├── SourceError                  a camera / video / stream cannot be opened
    ├── ServeError                   the live view server cannot start (bad address, port in use)
    └── MissingExtraError            an optional dependency group is not installed

The trainer's own errors (DataError, ExportError, ...) live in `trainer.errors` and
subclass `TledgeError`. Library code raises these; only the CLI turns them into exit codes.
"""

from __future__ import annotations


class TledgeError(Exception):
    """Base class for every error tledge reports to a user."""


class ImageError(TledgeError):
    """One image cannot be decoded, or decoding it would be unsafe."""


class ModelError(TledgeError):
    """A model file, bundle or labels file is unusable."""


class BundleIntegrityError(ModelError):
    """A bundle's model file does not match the sha256 in its manifest."""


class RuntimeMissingError(TledgeError):
    """Neither ai-edge-litert nor tflite-runtime is installed."""


class DelegateError(TledgeError):
    """A TFLite delegate library cannot be loaded."""


class SourceError(TledgeError):
    """A frame source (camera, video, stream, images) cannot be opened or read."""


class ServeError(TledgeError):
    """The live view server (`--serve`) cannot be configured or started."""


class MissingExtraError(TledgeError):
    """An optional dependency group is needed but not installed."""

    def __init__(self, extra: str, what: str) -> None:
        super().__init__(
            f"{what} needs the '{extra}' extra, which is not installed. "
            f'Install it with: pip install "tledge[{extra}]"'
        )
        self.extra = extra
