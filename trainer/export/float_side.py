"""The float model's answers on the verification images, from the training run's own
features and head instead of a second backbone pass.

`tledge train --export` has every val/test image's backbone features in memory (the
feature pass computed them, with the TFLite copy of the backbone checked against Keras
or with Keras itself), and the classifier's head is one dense softmax layer on them, so
the float model's top-1 answer is argmax(features . W + b): no image goes through the
float backbone again. Valid only while the backbone is the one that computed the
features, i.e. not after a kept fine-tuning stage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from trainer.errors import ExportError
from trainer.export.verify import FloatTop
from trainer.model import OUTPUT_NAME


def head_float_top(model: Any, vectors: Mapping[str, np.ndarray], splits: Mapping[str, Sequence[tuple[str, int]]]) -> FloatTop | None:
    """A `FloatTop` answering from `vectors` (image path -> pooled features), or None
    when some verification image has no features (then the Keras model is used)."""
    needed = [path for items in splits.values() for path, _ in items]
    if not needed or any(path not in vectors for path in needed):
        return None
    kernel, bias = (np.asarray(w, np.float64) for w in model.get_layer(OUTPUT_NAME).get_weights())

    def top(split: str, images: np.ndarray) -> np.ndarray:
        paths = [path for path, _ in splits[split]]
        if len(paths) != len(images):
            raise ExportError(f"{split}: {len(images)} images but {len(paths)} feature rows; please report this bug")
        x = np.stack([vectors[p] for p in paths]).astype(np.float64)
        return (x @ kernel + bias).argmax(axis=1).astype(np.int64)  # softmax keeps the argmax

    return top
