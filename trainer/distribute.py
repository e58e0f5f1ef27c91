"""Which tf.distribute strategy training runs under.

The head is fitted in NumPy (trainer.head) unless `--distribute mirrored` asks for Keras
under MirroredStrategy; the fine-tuning stage runs on the default strategy.
"""

from __future__ import annotations

from typing import Any

from trainer.deps import require_tensorflow

#: metrics.json's `distribute` when the head is fitted in NumPy (every mode but `mirrored`).
NUMPY_RECORD: dict[str, Any] = {"strategy": "none (head fitted in NumPy)", "replicas": 1}


def mirrored_strategy() -> Any:
    """MirroredStrategy over every visible GPU/TPU, else over the logical CPUs."""
    tf = require_tensorflow()
    accelerators = tf.config.list_logical_devices("GPU") + tf.config.list_logical_devices("TPU")
    devices = [d.name for d in accelerators] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


def strategy_record(strategy: Any) -> dict[str, Any]:
    """What metrics.json says about a strategy that fitted the head: its name and replicas."""
    return {"strategy": type(strategy).__name__, "replicas": int(strategy.num_replicas_in_sync)}
