"""One exception tree for tledge. Every message says what went wrong *and* how to fix it.

    TledgeError                      base; the CLI turns it into exit code 1
    ├── DataError                    dataset folder / image problems (trainer)
    ├── ImageError                   one image cannot be decoded or is unsafe to decode
    ├── ModelError                   a .tflite / bundle / labels file is unusable
    │   └── BundleIntegrityError     a bundle's sha256 does not match its manifest
    ├── RuntimeMissingError          no TFLite interpreter package is installed
    ├── DelegateError                a delegate library cannot be loaded
    ├── SourceError                  a camera / video / stream cannot be opened
    ├── ServeError                   the live view server cannot start (bad address, port in use)
    ├── ExportError                  conversion or verification failed
    ├── WeightsError                 ImageNet weights cannot be found or loaded
    ├── OutputError                  a result (training run, log) cannot be written: disk full, permissions
    ├── DecisionError                a --threshold override or a bundle's thresholds are unusable
    ├── EventOutputError             an event output (MQTT, webhook, exec, queue) cannot start
    │   └── OutputUsageError         ... because of what the user gave: bad URL, wrong credentials
    └── MissingExtraError            an optional dependency group is not installed

Library code raises these; only the CLI turns them into exit codes.
"""

from __future__ import annotations


class TledgeError(Exception):
    """Base class for every error tledge reports to a user."""


class DataError(TledgeError):
    """The dataset cannot be used as given."""


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


class ExportError(TledgeError):
    """Conversion to .tflite or its verification failed."""


class OutputError(TledgeError):
    """A result cannot be written (disk full, read-only or unwritable folder)."""


class DecisionError(TledgeError):
    """A decision threshold (a --threshold override or the bundle's) is unusable."""


class EventOutputError(TledgeError):
    """An event output (MQTT, webhook, exec, on-disk queue) cannot be set up or started."""


class OutputUsageError(EventOutputError):
    """An event output was given a malformed URL or rejected credentials (a usage error)."""


class WeightsError(TledgeError):
    """Pretrained weights cannot be found or loaded."""


class MissingExtraError(TledgeError):
    """An optional dependency group is needed but not installed."""

    def __init__(self, extra: str, what: str) -> None:
        super().__init__(
            f"{what} needs the '{extra}' extra, which is not installed. "
            f'Install it with: pip install "tledge[{extra}]"'
        )
        self.extra = extra
