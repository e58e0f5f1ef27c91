"""Read what a .tflite file really contains: operators, tensor types, I/O and metadata.

The exporter checks the produced file, not the converter settings (a converter option
can be silently ignored). This parses the flatbuffer with the TFLite schema bindings
of `trainer.export.schema`; nothing is executed.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.errors import ExportError
from trainer.export.schema import TFLITE_IDENTIFIER, tflite_schema

#: Operators that mean "this model needs something beyond the TFLite builtin kernels".
_NON_BUILTIN = ("CUSTOM", "DELEGATE", "PLACEHOLDER_FOR_GREATER_OP_CODES")


@dataclass(frozen=True)
class TensorSummary:
    """One input or output tensor as stored in the file."""

    name: str
    dtype: str  # schema name: "UINT8", "INT8", "FLOAT32", ...
    shape: tuple[int, ...]
    scale: float | None  # None: not quantized
    zero_point: int | None


@dataclass(frozen=True)
class TfliteSummary:
    """The facts about a .tflite file that the exporter verifies."""

    ops: tuple[str, ...]  # sorted operator names; custom ops as "CUSTOM:<name>"
    tensor_dtypes: tuple[str, ...]  # every dtype used by a tensor of the main subgraph
    inputs: tuple[TensorSummary, ...]
    outputs: tuple[TensorSummary, ...]
    metadata_names: tuple[str, ...]  # e.g. ("min_runtime_version", "TFLITE_METADATA")

    @property
    def custom_ops(self) -> tuple[str, ...]:
        """Flex (TensorFlow fallback) and other custom operators."""
        return tuple(op for op in self.ops if op.startswith("CUSTOM") or op in _NON_BUILTIN)


def _enum_names(enum_cls: type) -> dict[int, str]:
    return {value: key for key, value in vars(enum_cls).items() if not key.startswith("_") and isinstance(value, int)}


def _tensor(tensor: object, dtype_names: dict[int, str]) -> TensorSummary:
    quant = getattr(tensor, "quantization", None)
    scale = zero_point = None
    if quant is not None and quant.scale is not None and len(quant.scale) == 1:
        scale, zero_point = float(quant.scale[0]), int(quant.zeroPoint[0])
    name = tensor.name.decode("utf-8", "replace") if isinstance(tensor.name, bytes) else str(tensor.name or "")
    return TensorSummary(
        name=name,
        dtype=dtype_names.get(tensor.type, str(tensor.type)),
        shape=tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ())),
        scale=scale,
        zero_point=zero_point,
    )


def inspect_tflite(model_bytes: bytes) -> TfliteSummary:
    """Parse `model_bytes` (a .tflite flatbuffer, metadata zip allowed after it)."""
    schema = tflite_schema()
    if len(model_bytes) < 8 or model_bytes[4:8] != TFLITE_IDENTIFIER:
        raise ExportError("The converter produced no TFLite model (no TFL3 identifier); re-run the export")
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    op_names = _enum_names(schema.BuiltinOperator)
    dtype_names = _enum_names(schema.TensorType)
    ops = set()
    for code in model.operatorCodes or []:
        if code.customCode is not None:
            ops.add(f"CUSTOM:{code.customCode.decode('utf-8', 'replace')}")
        else:
            # Codes above 127 live in builtinCode; older files use deprecatedBuiltinCode.
            ops.add(op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode)))
    graph = model.subgraphs[0]
    tensors = graph.tensors or []
    metadata = tuple(
        m.name.decode("utf-8", "replace") if isinstance(m.name, bytes) else str(m.name) for m in model.metadata or []
    )
    return TfliteSummary(
        ops=tuple(sorted(ops)),
        tensor_dtypes=tuple(sorted({dtype_names.get(t.type, str(t.type)) for t in tensors})),
        inputs=tuple(_tensor(tensors[i], dtype_names) for i in graph.inputs),
        outputs=tuple(_tensor(tensors[i], dtype_names) for i in graph.outputs),
        metadata_names=metadata,
    )
