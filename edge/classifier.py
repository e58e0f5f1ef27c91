"""Preprocess -> invoke -> dequantize -> top-k. Pure numpy around one interpreter."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.bundle import ModelInfo
from edge.errors import ModelError
from edge.preprocess import resize_rgb
from edge.runtime import make_interpreter

_INT_TYPES = (np.uint8, np.int8)

#: Largest input side a classifier may declare (pixels); real ones take 96-600. Checked
#: before allocation: a damaged shape claiming millions of rows (the fuzzer made one)
#: would otherwise allocate gigabytes, and a Raspberry Pi would be killed for it.
MAX_INPUT_SIDE = 4096


@dataclass(frozen=True)
class Prediction:
    """Top-k result for one frame. `scores` holds every class, dequantized (float32)."""

    top: tuple[tuple[int, str, float], ...]  # (class index, label, score), best first
    scores: np.ndarray
    latency_ms: float  # preprocess + invoke + postprocess

    @property
    def label(self) -> str:
        return self.top[0][1]

    @property
    def score(self) -> float:
        return self.top[0][2]

    @property
    def index(self) -> int:
        return self.top[0][0]


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    """float -> integer tensor with the tensor's own (scale, zero_point)."""
    info = np.iinfo(dtype)
    q = np.round(values.astype(np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """integer tensor -> float32 with the tensor's own (scale, zero_point)."""
    return (values.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def _check_input_side(interpreter: Any, info: ModelInfo) -> None:
    """Refuse an image input larger than MAX_INPUT_SIDE before tensors are allocated."""
    try:
        inputs = interpreter.get_input_details()
    except ValueError as exc:  # e.g. a tensor name that is not UTF-8: a damaged file
        raise ModelError(f"{info.model_path}: the model's tensor table is damaged ({exc}); copy it again or re-export it") from None
    for detail in inputs:
        dims = [int(d) for d in detail["shape"]]
        if len(dims) == 4 and max(dims[1], dims[2]) > MAX_INPUT_SIDE:
            raise ModelError(
                f"{info.model_path}: its input is {dims[2]}x{dims[1]} pixels, more than the {MAX_INPUT_SIDE}-pixel "
                "limit of an edge image classifier: the file is damaged or this is not such a model"
            )


class Classifier:
    """An image classifier over one TFLite interpreter.

    >>> clf = Classifier(load_model_info("models/clothing"))
    >>> clf.classify(frame_rgb, top_k=3).label
    """

    def __init__(self, info: ModelInfo, threads: int | None = None, delegate: str | None = None, backend: str | None = None) -> None:
        self.info = info
        self.interpreter, self.backend = make_interpreter(
            info.model_bytes, threads, delegate, backend, before_allocate=lambda interpreter: _check_input_side(interpreter, info)
        )
        try:
            inputs = self.interpreter.get_input_details()
            outputs = self.interpreter.get_output_details()
        except ValueError as exc:  # e.g. a tensor name that is not UTF-8: a damaged file
            raise ModelError(f"{info.model_path}: the model's tensor table is damaged ({exc}); copy it again or re-export it") from None
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{info.model_path}: not an image classifier (expects 1 input and 1 output, found {len(inputs)} and {len(outputs)})")
        self._in, self._out = inputs[0], outputs[0]
        shape = tuple(int(d) for d in self._in["shape"])
        if len(shape) != 4 or shape[3] != 3 or shape[1] < 1 or shape[2] < 1:
            raise ModelError(f"{info.model_path}: not an image classifier (input shape {shape}, expected (1, height, width, 3))")
        if shape[0] != 1:
            try:
                self.interpreter.resize_tensor_input(self._in["index"], [1, shape[1], shape[2], 3])
                self.interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"{info.model_path}: cannot set its batch size to 1 ({exc})") from None
            self._in = self.interpreter.get_input_details()[0]
            self._out = self.interpreter.get_output_details()[0]
        out_shape = tuple(int(d) for d in self._out["shape"])
        if len(out_shape) != 2 or out_shape[1] < 1:
            raise ModelError(f"{info.model_path}: not an image classifier (output shape {out_shape}, expected (1, classes))")
        self.input_size = (shape[1], shape[2])  # (height, width), pixels
        self.num_classes = out_shape[1]
        self.input_dtype = np.dtype(self._in["dtype"])
        self.output_dtype = np.dtype(self._out["dtype"])
        self.input_quant = tuple(self._in["quantization"])  # (scale, zero_point)
        self.output_quant = tuple(self._out["quantization"])
        if info.labels is not None and len(info.labels) != self.num_classes:
            raise ModelError(
                f"{info.model_path}: the labels list has {len(info.labels)} entries but the model has "
                f"{self.num_classes} outputs; pass the labels file made for this model"
            )
        self.labels = info.labels or tuple(f"class_{i}" for i in range(self.num_classes))
        # A third-party integer-input model records no normalisation, but its input
        # quantization was calibrated on full-range pixels, so the pixel codes themselves
        # are its input: uint8 as is, int8 shifted by 128 (true for [0,1] and [-1,1] models).
        self._pixel_codes = "input" not in info.manifest

    # -- the three stages, usable one by one (benchmarks, parity tests) --------------
    def preprocess(self, frame_rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 frame of any size -> the input tensor (1, H, W, 3) of the model's dtype."""
        if self.info.color_order == "BGR":
            frame_rgb = frame_rgb[:, :, ::-1]
        pixels = resize_rgb(frame_rgb, self.input_size, self.info.resize)
        if self.input_dtype == np.uint8 and (self._pixel_codes or (self.input_quant[0] in (0.0, 1.0) and self.input_quant[1] == 0)):
            tensor = pixels
        elif self.input_dtype == np.int8 and self._pixel_codes:
            tensor = (pixels.astype(np.int16) - 128).astype(np.int8)
        elif self.input_dtype in _INT_TYPES:
            scale, zero_point = self.input_quant
            real = (pixels.astype(np.float32) - self.info.input_mean) / self.info.input_std
            tensor = quantize(real, scale or 1.0, zero_point, self.input_dtype)
        else:
            tensor = ((pixels.astype(np.float32) - self.info.input_mean) / self.info.input_std).astype(self.input_dtype)
        return tensor[None, ...]

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        """Run the model on a prepared input tensor; return dequantized float32 scores (N,)."""
        try:
            self.interpreter.set_tensor(self._in["index"], tensor)
            self.interpreter.invoke()
            raw = self.interpreter.get_tensor(self._out["index"])[0]
        except (ValueError, RuntimeError) as exc:  # seen with damaged files the verifier let through
            raise ModelError(
                f"{self.info.model_path}: the model failed to run ({exc}); the file is damaged or needs "
                "operations this runtime lacks; copy it again or re-export it"
            ) from None
        if self.output_dtype in (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int16)):
            scale, zero_point = self.output_quant
            return dequantize(raw, scale or 1.0, zero_point)
        return raw.astype(np.float32, copy=True)

    def postprocess(self, scores: np.ndarray, top_k: int = 5) -> tuple[tuple[int, str, float], ...]:
        k = max(1, min(top_k, scores.shape[0]))
        order = np.argsort(-scores, kind="stable")[:k]
        return tuple((int(i), self.labels[int(i)], float(scores[int(i)])) for i in order)

    def classify(self, frame_rgb: np.ndarray, top_k: int = 5) -> Prediction:
        """Classify one RGB uint8 frame."""
        start = time.perf_counter()
        scores = self.invoke(self.preprocess(frame_rgb))
        top = self.postprocess(scores, top_k)
        return Prediction(top=top, scores=scores, latency_ms=(time.perf_counter() - start) * 1000.0)
