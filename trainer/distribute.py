"""Which tf.distribute strategy training runs under."""

from __future__ import annotations

from typing import Any

from trainer.config import Distribute
from trainer.deps import require_tensorflow


def choose_strategy(mode: Distribute) -> Any:
    """MirroredStrategy when asked, or (auto) when more than one GPU/TPU is visible."""
    tf = require_tensorflow()
    accelerators = tf.config.list_logical_devices("GPU") + tf.config.list_logical_devices("TPU")
    if mode is Distribute.MIRRORED or (mode is Distribute.AUTO and len(accelerators) > 1):
        devices = [d.name for d in accelerators] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()
