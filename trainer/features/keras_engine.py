"""The Keras feature extractor: a `tf.function` over the feature model (faster than `predict`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.config import FeatureEngine
from trainer.deps import require_tensorflow


class KerasExtractor:
    """A `tf.function` over the Keras feature model; float32 pixels in, feature rows out."""

    engine = FeatureEngine.KERAS

    def __init__(self, features_model: Any, size: int) -> None:
        tf = require_tensorflow()
        spec = tf.TensorSpec([None, size, size, 3], tf.float32)
        #: traced on first use; the TFLite conversion traces through this same function
        #: (trainer.features.tflite_engine), so a cold run traces the backbone once, not twice
        self.function = tf.function(lambda x: features_model(x, training=False), input_signature=[spec])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.function(batch).numpy()
