"""The TFLite feature extractor: a float32 .tflite copy of the feature model on
ai-edge-litert (fixed batch size), converted once per cache key and kept on disk."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomic import write_bytes
from edge.runtime import make_interpreter
from trainer.config import FeatureEngine
from trainer.deps import require_tensorflow
from trainer.quiet import native_stderr_hidden


class TFLiteExtractor:
    """A float32 .tflite copy of the feature model on ai-edge-litert, fixed batch size."""

    engine = FeatureEngine.TFLITE

    def __init__(self, model_bytes: bytes, size: int, batch: int, threads: int) -> None:
        self.batch = batch
        self.interpreter, _ = make_interpreter(model_bytes, threads=threads)
        index = self.interpreter.get_input_details()[0]["index"]
        self.interpreter.resize_tensor_input(index, [batch, size, size, 3])
        self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()[0]["index"]
        self._out = self.interpreter.get_output_details()[0]["index"]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.concatenate([self._run(images[i : i + self.batch]) for i in range(0, len(images), self.batch)])

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        n = chunk.shape[0]
        if n < self.batch:  # pad the last chunk; the interpreter's shape is fixed
            pad = np.zeros((self.batch - n,) + chunk.shape[1:], dtype=np.float32)
            chunk = np.concatenate([chunk, pad])
        self.interpreter.set_tensor(self._in, np.ascontiguousarray(chunk, dtype=np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out)[:n].copy()


def convert_to_tflite(features_model: Any, size: int, function: Any = None) -> bytes:
    """Convert the Keras feature model to a float32 .tflite (raw-pixel input).

    `function`: a `tf.function` of `features_model` with a [None, size, size, 3] float32
    input signature to trace through (the Keras extractor's, whose later calls then reuse
    the trace); None traces a new one.
    """
    tf = require_tensorflow()

    class _Holder(tf.Module):  # tracks the variables so the converter freezes them
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.variables_ = [w.value for w in model.weights]

    fn = function or tf.function(lambda x: features_model(x, training=False), input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    with native_stderr_hidden():  # tracing and the converter print from C++
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], _Holder(features_model))
        # The frozen function directly, not a SavedModel round trip through a temporary
        # folder: the same graph, and the interpreter here needs no signature.
        converter.experimental_lower_to_saved_model = False
        return converter.convert()


def cached_tflite_path(cache_root: Path, key: str) -> Path:
    """Where the converted backbone of cache key `key` is kept."""
    return cache_root / "backbones" / f"{key}.tflite"


def cached_tflite(features_model: Any, size: int, cache_root: Path, key: str, function: Any = None) -> tuple[bytes, float]:
    """The converted backbone from the cache, else converted now (through `function`, see
    `convert_to_tflite`) and cached. (bytes, seconds)."""
    path = cached_tflite_path(cache_root, key)
    if path.is_file():
        return path.read_bytes(), 0.0
    start = time.perf_counter()
    data = convert_to_tflite(features_model, size, function)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, data, durable=False)  # recomputable: no fsync
    return data, seconds
