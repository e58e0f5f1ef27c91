"""Bias correction for int8 weight rounding (data-free quantization's bias correction).

The converter rounds each conv kernel to int8, one scale per output channel
(scale = max|w| / 127). The rounding error dW is fixed once the weights are known, and
its effect on a channel's *mean* output is dW . E[x], where E[x] is the mean input of
each input channel. In a frozen MobileNetV2 those shifts add up over 52 convolutions
and move top-1 answers (scripts/int8_diagnosis.py measures by how much; the export
benchmark in BENCHMARKS.md shows the agreement of the int8 file).

For every Conv2D / DepthwiseConv2D followed by a BatchNormalization this module
computes dW exactly as the converter will, measures E[x] on the calibration images,
and adds the shift to the BatchNorm's moving mean, so that after rounding the layer's
mean output is the float model's again. The converter folds the BatchNorm into the
conv; scaling an output channel by the BatchNorm's factor scales its int8 scale too,
so rounding the unfolded kernel gives the same dW (up to that factor, which the
BatchNorm applies to the mean as well).

The means come from the training run's float TFLite backbone when the exporter measured
them there meanwhile (`trainer.export.input_means`; matched to the Keras convolutions by
layer name and input shape), else from one compiled Keras forward pass.

The corrected model is only what the converter sees; the float model that the export
is verified against is untouched (`bias_corrected` corrects a copy) or put back as it was
once the converter has read it (`bias_corrected_in_place`, what the exporter uses).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from trainer.export.input_means import ConvMean

#: Levels on each side of zero of a symmetric int8 weight (TFLite uses -127..127).
INT8_WEIGHT_LEVELS = 127
_CONVS = ("Conv2D", "DepthwiseConv2D")


@dataclass(frozen=True)
class Correction:
    """What `bias_corrected_in_place` changed: how many conv layers, and where their input
    means came from ("tflite": the run's float backbone file; "keras": a Keras pass)."""

    layers: int
    means_from: str | None = None  # None: nothing corrected


@dataclass(frozen=True)
class ConvNorm:
    """A convolution and the BatchNormalization that reads its output."""

    conv: Any
    norm: Any


def _reads(layer: Any) -> Any | None:
    """The one layer whose output `layer` reads, or None."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
        return None
    return nodes[0].input_tensors[0]._keras_history.operation


def find_conv_norms(model: Any) -> list[tuple[Any, ConvNorm]]:
    """(owning functional model, pair) for every conv -> BatchNorm pair, nested models included."""
    pairs: list[tuple[Any, ConvNorm]] = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            pairs.extend(find_conv_norms(layer))
        source = _reads(layer)
        if type(layer).__name__ != "BatchNormalization" or source is None or type(source).__name__ not in _CONVS:
            continue
        if type(source).__name__ == "DepthwiseConv2D" and source.get_config().get("depth_multiplier", 1) != 1:
            continue  # output channel != input channel: not worth a special case
        if len(getattr(source, "_outbound_nodes", [])) == 1 and layer.get_config().get("center", True):
            pairs.append((model, ConvNorm(source, layer)))
    return pairs


def rounding_error(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """int8 per-output-channel symmetric rounding of a Keras `kernel`, minus `kernel` (same shape)."""
    return rounding_error_along(kernel, 2 if depthwise else kernel.ndim - 1)  # depthwise (kh, kw, C, 1); conv (kh, kw, in, out)


def rounding_error_along(kernel: np.ndarray, axis: int) -> np.ndarray:
    """int8 symmetric rounding of `kernel` with one scale per index of `axis` (max|w| / 127,
    as TFLite's quantizer scales a convolution's weights), minus `kernel`."""
    others = tuple(i for i in range(kernel.ndim) if i != axis)
    scale = np.abs(kernel).max(axis=others, keepdims=True) / INT8_WEIGHT_LEVELS
    scale = np.where(scale > 0, scale, 1.0)
    return np.round(kernel / scale) * scale - kernel


def output_shift(kernel: np.ndarray, depthwise: bool, input_mean: np.ndarray) -> np.ndarray:
    """Mean change of each output channel caused by rounding: dW . E[x] (border effects ignored)."""
    error = rounding_error(kernel.astype(np.float64), depthwise)
    if depthwise:
        return (error[..., 0] * input_mean).sum(axis=(0, 1))
    return np.einsum("hwio,i->o", error, input_mean)


def _input_means(model: Any, owner: Any, convs: list[Any], images: Iterable[np.ndarray]) -> list[np.ndarray]:
    """Per input channel, the mean over images and positions of each conv's input.

    One compiled forward pass per batch gives every conv's input mean at once (an eager
    call of the probe model cost several times more per image).
    """
    from trainer.deps import require_keras, require_tensorflow

    keras = require_keras("tledge export")
    tf = require_tensorflow("tledge export")
    probe = keras.Model(owner.input, [keras.ops.mean(conv.input, axis=(1, 2)) for conv in convs])
    prefix = [] if owner is model else model.layers[1 : model.layers.index(owner)]  # e.g. pixel scaling

    def forward(x: Any) -> Any:
        for layer in prefix:
            x = layer(x)
        return probe(x, training=False)

    compiled = tf.function(forward, input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)])
    sums = [np.zeros(conv.input.shape[-1], np.float64) for conv in convs]
    count = 0
    for batch in images:
        for index, mean in enumerate(compiled(np.asarray(batch, np.float32))):
            sums[index] += np.asarray(mean, np.float64).sum(axis=0)
        count += len(batch)
    return [total / max(count, 1) for total in sums]


def _file_op(layer_name: str) -> re.Pattern[str]:
    """How a converted file names the op of Keras convolution `layer_name` in its output
    tensor's name: "…/<layer>_<n>/convolution" (Conv2D; "convolution1" where a 1x1 conv
    on a small map is lowered differently) or "…/<layer>_<n>/depthwise"."""
    return re.compile(rf"(?:^|[/;]){re.escape(layer_name)}(?:_\d+)?/(?:convolution|depthwise)\d*(?:[/;]|$)")


def _measured_means(convs: list[Any], measured: Sequence["ConvMean"]) -> list[np.ndarray] | None:
    """The input means of `convs` from the backbone file's (`trainer.export.input_means`),
    or None unless each conv matches exactly one of the file's convolutions by name, with
    the same input shape up to a ZeroPadding2D the converter folded into the convolution."""
    out = []
    for conv in convs:
        pattern = _file_op(conv.name)
        hits = [m for m in measured if pattern.search(m.name)]
        if len(hits) != 1:
            return None
        (height, width, channels), mean = hits[0].shape, hits[0].mean
        keras_height, keras_width, keras_channels = (int(d) for d in conv.input.shape[1:])
        if channels != keras_channels or mean.shape != (channels,):
            return None
        if (height, width) != (keras_height, keras_width):
            # The file pads inside the convolution; the Keras input holds the zero border,
            # which adds nothing to the sum and counts in the mean.
            source = _reads(conv)
            if type(source).__name__ != "ZeroPadding2D" or tuple(int(d) for d in source.input.shape[1:3]) != (height, width):
                return None
            mean = mean * (height * width) / (keras_height * keras_width)
        out.append(mean)
    return out


def _shift_means(
    model: Any, images: Iterable[np.ndarray], undo: list[tuple[Any, list[np.ndarray]]], measured: Sequence["ConvMean"] | None = None
) -> Correction:
    """Add each pair's rounding shift to its BatchNorm's moving mean, in `model`; every
    BatchNorm's weights before the change go to `undo` first. The input means come from
    `measured` where they all match, else from a Keras pass over `images`."""
    found = find_conv_norms(model)
    owners = {id(owner): owner for owner, _ in found}
    if len(owners) != 1:
        return Correction(0)  # none, or spread over several nested models: leave it to the converter
    owner = next(iter(owners.values()))
    if owner is not model and owner not in model.layers:
        return Correction(0)
    pairs = [pair for _, pair in found]
    convs = [pair.conv for pair in pairs]
    means = _measured_means(convs, measured) if measured else None
    means_from = "keras" if means is None else "tflite"
    if means is None:
        means = _input_means(model, owner, convs, images)
    for pair, mean in zip(pairs, means):
        kernel = pair.conv.get_weights()[0]
        shift = output_shift(kernel, type(pair.conv).__name__ == "DepthwiseConv2D", mean)
        weights = pair.norm.get_weights()  # [gamma], [beta], moving_mean, moving_variance
        undo.append((pair.norm, [w.copy() for w in weights]))
        weights[-2] = (weights[-2] + shift).astype(weights[-2].dtype)
        pair.norm.set_weights(weights)
    return Correction(len(pairs), means_from)


def bias_corrected(model: Any, images: Iterable[np.ndarray]) -> tuple[Any, int]:
    """A copy of `model` whose BatchNorms cancel the mean shift of int8 weight rounding.

    `images` yields float32 raw-pixel batches (n, H, W, 3), the calibration images.
    Returns the copy and how many conv layers were corrected (0: the copy is unchanged).
    """
    from trainer.deps import require_keras

    keras = require_keras("tledge export")
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy, _shift_means(copy, images, []).layers


@contextmanager
def bias_corrected_in_place(model: Any, images: Iterable[np.ndarray], measured: Sequence["ConvMean"] | None = None) -> Iterator[Correction]:
    """`model` itself corrected as `bias_corrected` corrects a copy, for the duration of
    the block, and its BatchNorm weights put back on leaving (an error included).
    `measured`: the input means from the run's float backbone file, used where they all
    match. Yields what was corrected.

    The exporter converts inside the block: copying a model (rebuilding every layer and
    copying every weight) costs more than the correction itself.
    """
    undo: list[tuple[Any, list[np.ndarray]]] = []
    try:
        yield _shift_means(model, images, undo, measured)
    finally:
        for norm, weights in reversed(undo):
            norm.set_weights(weights)
