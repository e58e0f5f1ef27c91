"""Cutting the classifier at a block boundary: a frozen bottom and a trainable top.

Fine-tuning unfreezes the top blocks of the backbone. Everything below them stays frozen
(BatchNorm in inference mode), so its output for a given image never changes: the
bottom (pixels -> activations at the cut) runs once per image and its output is cached,
and the top (activations -> softmax) trains on the cache. Both halves share their layers
with the classifier, so training the top trains the classifier itself.

A cut is only valid at a block boundary: a layer whose output is the one tensor that
crosses from the layers below it to the layers above (a residual connection must not
straddle the cut). Candidates are named per backbone (`BLOCK_ENDS`) and each is checked
on the graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edge.errors import ModelError
from trainer import model as model_lib
from trainer.config import Backbone
from trainer.deps import require_keras

#: Layers that end a block, per backbone (a regular expression over layer names).
BLOCK_ENDS: dict[Backbone, str] = {
    Backbone.MOBILENET_V2: r"^(expanded_conv_project_BN|block_\d+_add|block_\d+_project_BN)$",
    Backbone.RESNET50: r"^conv\d_block\d+_out$",
}


@dataclass(frozen=True)
class Cut:
    """Where the classifier is cut: `blocks` blocks above the layer `layer`."""

    blocks: int  # blocks trained above the cut (the backbone's final 1x1 conv counts as one)
    layer: str  # name of the backbone layer whose output is cached
    shape: tuple[int, ...]  # activation shape per image (H, W, C)


def block_cuts(backbone_model: Any, backbone: Backbone) -> list[Cut]:
    """Valid cuts, top first: cuts[0] has 1 block above it, cuts[1] 2 blocks, ...

    A candidate layer is valid when no layer above it reads a tensor made below it.
    """
    pattern = re.compile(BLOCK_ENDS[Backbone(backbone)])
    layers = backbone_model.layers
    position = {id(layer): i for i, layer in enumerate(layers)}
    # earliest[i]: the lowest layer index read by any layer at index >= i
    reads: list[int] = []
    for layer in layers:
        # Layers are shared with the halves made by `split`; their nodes there read tensors
        # from outside this model (the halves' own inputs): only this graph's edges count.
        inbound = [position[key] for t in _input_tensors(layer) if (key := id(t._keras_history.operation)) in position]
        reads.append(min(inbound, default=position[id(layer)]))
    earliest = [0] * (len(layers) + 1)
    earliest[len(layers)] = len(layers)
    for i in range(len(layers) - 1, -1, -1):
        earliest[i] = min(reads[i], earliest[i + 1])
    cuts: list[Cut] = []
    for i in range(len(layers) - 2, -1, -1):
        if pattern.match(layers[i].name) and earliest[i + 1] >= i:
            shape = tuple(int(d) for d in layers[i].output.shape[1:])
            cuts.append(Cut(len(cuts) + 1, layers[i].name, shape))
    return cuts


def _input_tensors(layer: Any) -> list[Any]:
    tensors = []
    for node in getattr(layer, "_inbound_nodes", []):
        tensors.extend(node.input_tensors)
    return tensors


def choose_cut(backbone_model: Any, backbone: Backbone, blocks: int) -> Cut:
    """The cut with `blocks` blocks above it; `ModelError` naming the range otherwise."""
    cuts = block_cuts(backbone_model, backbone)
    if not 1 <= blocks <= len(cuts):
        raise ModelError(f"--fine-tune {blocks}: {Backbone(backbone).value} has {len(cuts)} blocks that can be fine-tuned; choose 1..{len(cuts)} or auto")
    return cuts[blocks - 1]


@dataclass(frozen=True)
class Halves:
    """The classifier split at `cut`; both halves share the classifier's layers."""

    cut: Cut
    bottom: Any  # keras.Model: pixels (0..255) -> activations at the cut
    top: Any  # keras.Model: activations -> softmax (dropout active when training)
    top_backbone: Any  # keras.Model: the backbone's layers above the cut


def split(classifier: Any, cut: Cut) -> Halves:
    """Bottom and top of `classifier` at `cut`. BatchNorm runs in inference mode in both."""
    keras = require_keras()
    backbone = classifier.get_layer(model_lib.BACKBONE_NAME)
    cut_tensor = backbone.get_layer(cut.layer).output
    lower = keras.Model(backbone.input, cut_tensor, name="backbone_bottom")
    upper = keras.Model(cut_tensor, backbone.output, name="backbone_top")
    pixels = keras.Input(classifier.input.shape[1:], dtype="float32", name=model_lib.INPUT_NAME)
    scaled = classifier.get_layer("scale_pixels")(pixels)
    bottom = keras.Model(pixels, lower(scaled, training=False), name="bottom")
    activations = keras.Input(cut.shape, dtype="float32", name="activations")
    x = upper(activations, training=False)  # frozen BatchNorm: inference mode, also when training
    x = classifier.get_layer(model_lib.POOL_NAME)(x)
    x = classifier.get_layer(model_lib.DROPOUT_NAME)(x)
    probs = classifier.get_layer(model_lib.OUTPUT_NAME)(x)
    top = keras.Model(activations, probs, name="top")
    return Halves(cut, bottom, top, upper)


def pooled_features(halves: Halves) -> Any:
    """activations -> pooled features (the head's input), on the top's frozen layers."""
    keras = require_keras()
    activations = halves.top.input
    x = halves.top_backbone(activations, training=False)
    return keras.Model(activations, halves.top.get_layer(model_lib.POOL_NAME)(x), name="top_features")


def set_trainable(halves: Halves, trainable: bool) -> int:
    """Unfreeze (or freeze) the backbone layers above the cut, BatchNorm excepted.

    Returns how many layers are trainable. The layers below the cut are never touched.
    """
    keras = require_keras()
    count = 0
    for layer in halves.top_backbone.layers:
        wanted = trainable and bool(layer.weights) and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = wanted
        count += int(wanted)
    return count
