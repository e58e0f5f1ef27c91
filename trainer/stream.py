"""Images of a split streamed through tf.data, decoded and resized as the device does
(`edge.images.load_rgb` + `edge.preprocess.resize_rgb`), never all held in memory.

Used where the whole classifier sees pixels: fine-tuning and `tledge evaluate`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.errors import ImageError
from edge.images import load_rgb
from edge.preprocess import ResizePolicy, resize_rgb
from trainer.deps import require_tensorflow

Item = tuple[str, int]  # (image path, class index)


def _decoder(size: tuple[int, int], policy: ResizePolicy) -> Any:
    def decode(path: bytes) -> tuple[np.ndarray, bool]:
        try:
            return resize_rgb(load_rgb(os.fsdecode(path)), size, policy), np.bool_(True)
        except ImageError:  # skipped; the caller learns which by the flag
            return np.zeros((*size, 3), dtype=np.uint8), np.bool_(False)

    return decode


def decoded(items: Sequence[Item], size: tuple[int, int], policy: ResizePolicy, shuffle_seed: int | None = None, threads: int | None = None) -> Any:
    """tf.data of (index into `items`, uint8 image, decoded ok), in order unless shuffled
    (reshuffled every epoch). Decoding runs `threads` at a time (default: tf.data's choice)."""
    tf = require_tensorflow()
    paths = [os.fsencode(path) for path, _ in items]  # bytes: file names need not be UTF-8
    ds = tf.data.Dataset.from_tensor_slices((tf.constant(paths, dtype=tf.string), tf.range(len(paths), dtype=tf.int64)))
    if shuffle_seed is not None and paths:
        ds = ds.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    decode = _decoder(size, policy)

    def load(path: Any, index: Any) -> tuple[Any, Any, Any]:
        image, ok = tf.numpy_function(decode, [path], [tf.uint8, tf.bool], stateful=False)
        image.set_shape((*size, 3))
        ok.set_shape(())
        return index, image, ok

    return ds.map(load, num_parallel_calls=threads or tf.data.AUTOTUNE, deterministic=True)


def training_batches(
    items: Sequence[Item], size: tuple[int, int], policy: ResizePolicy, num_classes: int, batch: int,
    shuffle_seed: int | None = None, weights: dict[int, float] | None = None, threads: int | None = None,
) -> Any:
    """tf.data of (float32 images, one-hot[, class weight]) batches for `Model.fit`;
    unreadable images are left out."""
    tf = require_tensorflow()
    labels = tf.constant([label for _, label in items] or [0], dtype=tf.int64)
    per_class = tf.constant([weights.get(c, 1.0) for c in range(num_classes)] if weights else [1.0] * num_classes, dtype=tf.float32)

    def example(index: Any, image: Any, ok: Any) -> tuple[Any, ...]:
        label = tf.gather(labels, index)
        onehot = tf.one_hot(label, num_classes, dtype=tf.float32)
        x = tf.cast(image, tf.float32)
        return (x, onehot, tf.gather(per_class, label)) if weights else (x, onehot)

    ds = decoded(items, size, policy, shuffle_seed, threads).filter(lambda index, image, ok: ok).map(example)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


def predict_items(model: Any, items: Sequence[Item], size: tuple[int, int], policy: ResizePolicy, batch: int = 32, threads: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(true labels, softmax outputs, unreadable paths) of a Keras model over `items`,
    one batch in memory at a time."""
    tf = require_tensorflow()
    fn = tf.function(lambda x: model(x, training=False))
    truth: list[int] = []
    outputs: list[np.ndarray] = []
    unreadable: list[str] = []
    for index, images, ok in decoded(items, size, policy, threads=threads).batch(batch).prefetch(2).as_numpy_iterator():
        for i in index[~ok]:
            unreadable.append(items[int(i)][0])
        if ok.any():
            outputs.append(fn(tf.constant(images[ok], dtype=tf.float32)).numpy())
            truth.extend(items[int(i)][1] for i in index[ok])
    probs = np.concatenate(outputs) if outputs else np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    return np.array(truth, dtype=np.int64), probs, unreadable
