"""The trainer's exceptions. Every message says what went wrong *and* how to fix it.

    edge.errors.TledgeError          base of every error a user sees (the CLI: exit code 1)
    ├── DataError                    dataset folder / image problems
    │   └── RunDirError              a run folder is incomplete, malformed, or its data is gone
    ├── ExportError                  conversion or verification failed
    ├── WeightsError                 ImageNet weights cannot be found or loaded
    └── OutputError                  a result (training run) cannot be written: disk full, permissions

They subclass edge's base, so the one CLI maps them like the runtime's errors. Library
code raises these; only the CLI turns them into exit codes.
"""

from __future__ import annotations

from edge.errors import TledgeError


class DataError(TledgeError):
    """The dataset cannot be used as given."""


class RunDirError(DataError):
    """A training run folder cannot be read: a file is missing or malformed, or the
    images its splits name are not where the run says."""


class ExportError(TledgeError):
    """Conversion to .tflite or its verification failed."""


class OutputError(TledgeError):
    """A result cannot be written (disk full, read-only or unwritable folder)."""


class WeightsError(TledgeError):
    """Pretrained weights cannot be found or loaded."""
