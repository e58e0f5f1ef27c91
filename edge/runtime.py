"""The only place that imports a TFLite interpreter.

Backends, in order: ``ai_edge_litert`` (LiteRT, current wheels for x86-64 and aarch64,
Python 3.10-3.13), then ``tflite_runtime`` (legacy wheels for older Pi OS images).
"""

from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edge.errors import DelegateError, ModelError, RuntimeMissingError

INSTALL_HINT = (
    "No TFLite interpreter is installed. Install one with: pip install ai-edge-litert "
    '(or, on older Raspberry Pi OS images without an ai-edge-litert wheel: pip install "tledge[legacy]")'
)


@dataclass(frozen=True)
class Backend:
    """An importable interpreter implementation."""

    name: str  # "ai_edge_litert" or "tflite_runtime"
    interpreter_cls: Any
    load_delegate: Any


def available_backends() -> list[Backend]:
    """Every installed backend, preferred first. Empty when none is installed."""
    found: list[Backend] = []
    try:
        from ai_edge_litert import interpreter as litert

        found.append(Backend("ai_edge_litert", litert.Interpreter, litert.load_delegate))
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as tflrt  # type: ignore[import-not-found]

        found.append(Backend("tflite_runtime", tflrt.Interpreter, tflrt.load_delegate))
    except ImportError:
        pass
    return found


def get_backend(name: str | None = None) -> Backend:
    """The preferred backend, or the one called `name`. Raises `RuntimeMissingError`."""
    backends = available_backends()
    if name:
        for backend in backends:
            if backend.name == name:
                return backend
        raise RuntimeMissingError(f"Interpreter backend '{name}' is not installed. {INSTALL_HINT}")
    if not backends:
        raise RuntimeMissingError(INSTALL_HINT)
    return backends[0]


def default_threads() -> int:
    """All cores, capped at 4 (a Pi 4/5 has 4; more rarely helps a small CNN)."""
    return max(1, min(4, os.cpu_count() or 1))


_DELEGATE_SYMBOLS = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")


def _check_delegate_library(delegate: str) -> None:
    """Open the library and look for the delegate entry points before the backend does:
    a backend Delegate built on a bad library fails half-made and then prints a
    traceback from its __del__ on top of our message."""
    try:
        library = ctypes.CDLL(delegate)
    except OSError as exc:
        raise DelegateError(
            f"Cannot load the delegate library '{delegate}': {exc}. Check that it is installed "
            "(for a Coral Edge TPU: sudo apt-get install libedgetpu1-std) and that the path or name is right."
        ) from None
    missing = [name for name in _DELEGATE_SYMBOLS if not hasattr(library, name)]
    if missing:
        raise DelegateError(
            f"'{delegate}' is not a TFLite external delegate (it lacks {', '.join(missing)}); "
            "pass the delegate's own library, e.g. libedgetpu.so.1"
        )


def pipeline_threads() -> int:
    """Interpreter threads inside a camera pipeline: all cores but one (the capture thread
    decodes and resizes on it), at least 1, at most 4. Why cores - 1: BENCHMARKS.md,
    section 4 (1 vs 2 interpreter threads on a 2-core machine)."""
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def make_interpreter(
    model_content: bytes,
    threads: int | None = None,
    delegate: str | None = None,
    backend: str | None = None,
    before_allocate: Callable[[Any], None] | None = None,
) -> tuple[Any, Backend]:
    """Create and allocate an interpreter for `model_content`.

    `before_allocate(interpreter)` may refuse the model (raise `ModelError`) from its
    declared tensor shapes, before any tensor memory is allocated.

    `delegate` is a shared-library name or path (e.g. ``libedgetpu.so.1`` for a Coral
    Edge TPU). Raises `DelegateError` if it cannot be loaded, `ModelError` if the model
    cannot be parsed.
    """
    chosen = get_backend(backend)
    delegates = []
    if delegate:
        _check_delegate_library(delegate)
        try:
            delegates.append(chosen.load_delegate(delegate))
        except (ValueError, OSError, RuntimeError, AttributeError) as exc:
            raise DelegateError(
                f"Cannot load the delegate library '{delegate}': {exc}. Check that it is "
                "installed (for a Coral Edge TPU: sudo apt-get install libedgetpu1-std) "
                "and that the path or name is right."
            ) from None
    kwargs: dict[str, Any] = {"model_content": model_content, "num_threads": threads or default_threads()}
    if delegates:
        kwargs["experimental_delegates"] = delegates
    try:
        interpreter = chosen.interpreter_cls(**kwargs)
        _check_declared_size(interpreter)
        if before_allocate is not None:
            before_allocate(interpreter)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(
            f"The model cannot be loaded by {chosen.name}: {exc}. The file is damaged, truncated or not a "
            "TFLite model: copy it again or re-export it with `tledge export`"
        ) from None
    return interpreter, chosen


#: Most memory a model may declare for its tensors (bytes), checked before they are
#: allocated. MobileNetV2 at 224 px declares 10-43 MB; a damaged shape (the fuzzer made a
#: 13-million-row input) would otherwise allocate gigabytes and take a small device down.
MAX_TENSOR_BYTES = 1 << 30


def declared_tensor_bytes(interpreter: Any) -> int:
    """Sum of every tensor's declared size in bytes, readable before allocation
    (dynamic dimensions, -1, count as 1)."""
    return sum(
        math.prod(max(1, int(d)) for d in detail["shape"]) * np.dtype(detail["dtype"]).itemsize
        for detail in interpreter.get_tensor_details()
    )


def _check_declared_size(interpreter: Any) -> None:
    declared = declared_tensor_bytes(interpreter)
    if declared > MAX_TENSOR_BYTES:
        raise ModelError(
            f"The model declares {declared / 1e9:,.1f} GB of tensors (the limit is {MAX_TENSOR_BYTES / 1e9:.1f} GB): "
            "its file is damaged, or the model is far too large for an edge device; copy it again or re-export it"
        )


class CompiledModelRunner:
    """Runs a model through LiteRT's newer CompiledModel API (ai-edge-litert >= 2.0, CPU).

    Same role as an Interpreter's set_tensor / invoke / get_tensor, for `tledge bench
    --api compiled`. Raises `RuntimeMissingError` where the API is not available.
    """

    def __init__(self, model_content: bytes, threads: int | None = None) -> None:
        try:
            from ai_edge_litert import compiled_model, cpu_options, options
        except ImportError:
            raise RuntimeMissingError(
                "The CompiledModel API needs ai-edge-litert 2.0 or newer: pip install -U ai-edge-litert "
                "(or use --api interpreter)"
            ) from None
        opts = options.Options(cpu_options=cpu_options.CpuOptions(num_threads=threads or default_threads()))
        try:
            self._model = compiled_model.CompiledModel.from_buffer(model_content, options=opts)
            self._inputs = self._model.create_input_buffers(0)
            self._outputs = self._model.create_output_buffers(0)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"The model cannot be compiled by LiteRT's CompiledModel API: {exc}") from None
        key = self._model.get_signature_by_index(0)["key"]
        self.output_details = list(self._model.get_output_tensor_details(key).values())
        if len(self._inputs) != 1 or len(self._outputs) != 1:
            raise ModelError("CompiledModelRunner supports models with one input and one output")
        shape = self.output_details[0]["shape"]
        self._out_count = math.prod(int(d) for d in shape)
        self._out_dtype = self.output_details[0]["dtype"]

    def run(self, tensor: Any) -> Any:
        """Write `tensor`, run the model, return the raw output array (model's dtype and shape)."""
        self._inputs[0].write(tensor)
        self._model.run_by_index(0, self._inputs, self._outputs)
        return self._outputs[0].read(self._out_count, self._out_dtype).reshape(self.output_details[0]["shape"])

    def close(self) -> None:
        self._model.close()
