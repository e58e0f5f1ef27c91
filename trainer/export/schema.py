"""The one source of the TFLite flatbuffer schema bindings the exporter reads and writes
(`schema_py_generated`). They come from ai-edge-litert, the interpreter package the edge
runtime uses, so the file is parsed with the schema of the runtime that will run it."""

from __future__ import annotations

from types import ModuleType

#: The file identifier of a .tflite flatbuffer.
TFLITE_IDENTIFIER = b"TFL3"


def tflite_schema() -> ModuleType:
    """The generated TFLite schema module (ModelT, BufferT, TensorType, BuiltinOperator...)."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated
