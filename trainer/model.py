"""Backbone registry, weights resolution, and the classifier graph.

The classifier takes float32 raw RGB pixels 0..255, shape (None, H, W, 3):

    pixels -> scaling (the backbone's own, inside the graph) -> backbone (frozen,
    BatchNorm in inference mode) -> global average pooling ("pool") -> dropout -> dense
    softmax ("probs")

so an exported model needs no preprocessing beyond resizing. Adding a backbone is one
`BackboneSpec` in `REGISTRY`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge.errors import ModelError
from trainer.config import WEIGHTS_ENV, Backbone, ModelOptions, WeightsKind
from trainer.deps import require_keras
from trainer.errors import WeightsError

#: Layer names the rest of tledge relies on (feature model, head weight transfer).
INPUT_NAME = "pixels"
BACKBONE_NAME = "backbone"
POOL_NAME = "pool"
DROPOUT_NAME = "dropout"
OUTPUT_NAME = "probs"

#: ImageNet BGR channel means subtracted by "caffe"-style preprocessing (ResNet50).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and where Keras keeps its ImageNet weights."""

    name: Backbone
    build: Callable[..., Any]  # keras.applications constructor
    scaling: str  # "tf" (x/127.5 - 1) or "caffe" (RGB->BGR, minus ImageNet mean)
    alpha_range: tuple[float, float] | None  # None: no width multiplier
    imagenet_file: Callable[[float, int], str]  # Keras cache file name for (alpha, size)


def _mobilenet_v2(**kwargs: Any) -> Any:
    return require_keras().applications.MobileNetV2(**kwargs)


def _resnet50(alpha: float, **kwargs: Any) -> Any:
    del alpha  # ResNet50 has no width multiplier
    return require_keras().applications.ResNet50(**kwargs)


REGISTRY: dict[Backbone, BackboneSpec] = {
    Backbone.MOBILENET_V2: BackboneSpec(
        Backbone.MOBILENET_V2,
        _mobilenet_v2,
        "tf",
        (0.35, 1.4),
        lambda alpha, size: f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{size}_no_top.h5",
    ),
    Backbone.RESNET50: BackboneSpec(
        Backbone.RESNET50,
        _resnet50,
        "caffe",
        None,
        lambda alpha, size: "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
}

#: Smallest / largest square input accepted, pixels. Pretrained weights are made for
#: 96..224; smaller inputs are for tests with `--weights none`.
MIN_SIZE, MAX_SIZE = 32, 512


@dataclass(frozen=True)
class BuiltBackbone:
    """A headless backbone and what its weights are (recorded in run.json)."""

    model: Any  # keras.Model, outputs the last feature map
    weights: str  # "imagenet", a file path, "none" or "random (imagenet unavailable)"
    digest: str  # sha256 over the weights' bytes: the feature-cache key
    warning: str | None = None


def keras_models_dir() -> Path:
    """Where Keras caches downloaded weights ($KERAS_HOME/models, default ~/.keras/models)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def check_options(options: ModelOptions) -> BackboneSpec:
    """The registry entry for `options`, after checking alpha and size."""
    spec = REGISTRY[Backbone(options.backbone)]
    if spec.alpha_range:
        low, high = spec.alpha_range
        if not low <= options.alpha <= high:
            raise ModelError(f"{spec.name.value} alpha must be between {low} and {high}, got {options.alpha}; e.g. --alpha 1.0")
    elif options.alpha != 1.0:
        raise ModelError(f"{spec.name.value} has no width multiplier; leave --alpha at 1.0")
    if not MIN_SIZE <= options.image_size <= MAX_SIZE:
        raise ModelError(f"--image-size must be between {MIN_SIZE} and {MAX_SIZE} pixels (96..224 for pretrained weights), got {options.image_size}")
    if not 0.0 <= options.dropout < 1.0:
        raise ModelError(f"dropout must be in [0, 1), got {options.dropout}")
    return spec


def build_backbone(options: ModelOptions) -> BuiltBackbone:
    """Build the headless backbone with its weights resolved (flag, env, imagenet).

    Raises `WeightsError` with the fix when weights cannot be found or do not fit.
    """
    spec = check_options(options)
    kind = options.weights.kind
    if kind is WeightsKind.NONE:
        return _finish(_construct(spec, options, None), "none")
    if kind is WeightsKind.FILE:
        return _finish(_from_file(spec, options, options.weights.path), weights_label(options))
    cached = cached_imagenet_file(spec, options)
    if cached is not None:  # Keras' own cache; any input size loads by path
        return _finish(_from_file(spec, options, cached), weights_label(options))
    try:
        return _finish(_construct(spec, options, "imagenet"), "imagenet")
    except Exception as exc:  # Keras raises a bare Exception on a failed download
        if not options.allow_random_backbone:
            raise WeightsError(_offline_message(spec, options, exc)) from None
        warning = (
            f"ImageNet weights for {spec.name.value} are unavailable ({_short(exc)}); "
            "TRAINING ON A RANDOM BACKBONE: accuracy will be poor. " + _remedy(spec, options)
        )
        return _finish(_construct(spec, options, None), "random (imagenet unavailable)", warning)


def weights_label(options: ModelOptions) -> str:
    """What run.json says the weights are when they load from a file: its path for
    --weights FILE / $TLEDGE_WEIGHTS, "imagenet" for Keras' cached ImageNet file."""
    return str(options.weights.path) if options.weights.kind is WeightsKind.FILE else "imagenet"


def _construct(spec: BackboneSpec, options: ModelOptions, weights: str | None) -> Any:
    size = options.image_size
    with contextlib.redirect_stdout(sys.stderr):  # Keras prints download progress; keep stdout for --json
        return spec.build(
            input_shape=(size, size, 3), alpha=options.alpha, include_top=False, weights=weights, name=BACKBONE_NAME
        )


def _from_file(spec: BackboneSpec, options: ModelOptions, path: Path | None) -> Any:
    if path is None or not Path(path).is_file():
        raise WeightsError(
            f"weights file {path} does not exist. Pass an existing file with --weights PATH "
            f"(or fix ${WEIGHTS_ENV}), or use --weights imagenet / --weights none"
        )
    model = _construct(spec, options, None)
    try:
        model.load_weights(str(path))
    except Exception as exc:  # h5py/Keras raise many types for a mismatched file
        raise WeightsError(
            f"{path} does not fit {spec.name.value} alpha {options.alpha} ({_short(exc)}). "
            f"Pass the no-top weights file made for this backbone and alpha "
            f"(e.g. {spec.imagenet_file(options.alpha, 224)}), or choose the backbone/alpha the file was made for"
        ) from None
    return model


def cached_imagenet_file(spec: BackboneSpec, options: ModelOptions) -> Path | None:
    """Keras' cached file for this size, else the one for 224 px (same weights)."""
    folder = keras_models_dir()
    for size in (options.image_size, 224):
        candidate = folder / spec.imagenet_file(options.alpha, size)
        if candidate.is_file():
            return candidate
    return None


def _remedy(spec: BackboneSpec, options: ModelOptions) -> str:
    name = spec.imagenet_file(options.alpha, 224)
    return (
        f"To fix it offline: pass the weights file with --weights /path/to/{name}, "
        f"or set {WEIGHTS_ENV}=/path/to/{name}, or copy that file into {keras_models_dir()}/ "
        "(download it on a machine with internet from Keras' storage, "
        f"https://storage.googleapis.com/tensorflow/keras-applications/). Use --weights none to train without them."
    )


def _offline_message(spec: BackboneSpec, options: ModelOptions, exc: BaseException) -> str:
    return f"cannot obtain the ImageNet weights for {spec.name.value} (Keras' download failed: {_short(exc)}). " + _remedy(spec, options)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("…" if len(text) > 200 else "")


def _finish(model: Any, weights: str, warning: str | None = None) -> BuiltBackbone:
    model.trainable = False
    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array).tobytes())
    return BuiltBackbone(model, weights, digest.hexdigest(), warning)


# -- the classifier graph -------------------------------------------------------------


def scaling_layer(spec: BackboneSpec) -> Any:
    """The backbone's input scaling as a standard, serialisable Keras layer."""
    keras = require_keras()
    if spec.scaling == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_pixels")
    # caffe: y = (x reversed to BGR) - mean. A fixed 3x3 permutation as a frozen Dense.
    perm = np.zeros((3, 3), dtype=np.float32)
    perm[2, 0] = perm[1, 1] = perm[0, 2] = 1.0
    layer = keras.layers.Dense(3, name="scale_pixels", trainable=False)
    layer.build((None, None, None, 3))
    layer.set_weights([perm, -np.asarray(CAFFE_MEAN_BGR, dtype=np.float32)])
    return layer


def build_classifier(backbone: BuiltBackbone, options: ModelOptions, num_classes: int) -> Any:
    """pixels (0..255) -> scaling -> frozen backbone -> pool -> dropout -> softmax."""
    keras = require_keras()
    spec = check_options(options)
    size = options.image_size
    inputs = keras.Input((size, size, 3), dtype="float32", name=INPUT_NAME)
    x = scaling_layer(spec)(inputs)
    x = backbone.model(x, training=False)  # BatchNorm stays in inference mode, also when fine-tuning
    x = keras.layers.GlobalAveragePooling2D(name=POOL_NAME)(x)
    x = keras.layers.Dropout(options.dropout, name=DROPOUT_NAME)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name=f"tledge_{spec.name.value}")


def feature_model(classifier: Any) -> Any:
    """The frozen feature extractor inside `classifier`: pixels -> pooled features."""
    keras = require_keras()
    return keras.Model(classifier.input, classifier.get_layer(POOL_NAME).output, name="features")


def build_head(feature_dim: int, num_classes: int, dropout: float) -> Any:
    """Dropout + dense softmax on cached features; layer names match `build_classifier`."""
    keras = require_keras()
    return keras.Sequential(
        [
            keras.Input((feature_dim,), name="features"),
            keras.layers.Dropout(dropout, name=DROPOUT_NAME),
            keras.layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME),
        ],
        name="head",
    )


def copy_head(head: Any, classifier: Any) -> None:
    """Put the fitted head's dense weights (trainer.head.DenseHead) into the full classifier."""
    classifier.get_layer(OUTPUT_NAME).set_weights([head.kernel, head.bias])


def unfreeze_top(classifier: Any, layers: int) -> int:
    """Make the top `layers` weighted backbone layers trainable, BatchNorm excepted.

    Returns how many layers were unfrozen.
    """
    keras = require_keras()
    backbone = classifier.get_layer(BACKBONE_NAME)
    backbone.trainable = True
    weighted = [layer for layer in backbone.layers if layer.weights]
    chosen = set(id(layer) for layer in weighted[-layers:]) if layers > 0 else set()
    unfrozen = 0
    for layer in backbone.layers:
        wanted = id(layer) in chosen and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = wanted
        unfrozen += int(wanted)
    return unfrozen
