"""Building a run's Keras model: the backbone with its weights resolved, and the classifier
around it, under the run's seed."""

from __future__ import annotations

from typing import Any

from trainer import model as model_lib
from trainer.config import TrainOptions
from trainer.deps import require_keras


def build_classifier(options: TrainOptions, num_classes: int) -> tuple[model_lib.BuiltBackbone, Any]:
    """The backbone (weights resolved) and the full classifier around it."""
    keras = require_keras("tledge train")
    keras.utils.set_random_seed(options.seed)
    backbone = model_lib.build_backbone(options.model)
    return backbone, model_lib.build_classifier(backbone, options.model, num_classes)
