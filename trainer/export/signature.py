"""The serving signature of a converted classifier, written into the flatbuffer.

The converter is run on the frozen concrete function (`experimental_lower_to_saved_model`
off): that skips the SavedModel it would otherwise write to a temporary folder and read
back, which was the largest fixed cost of a conversion, and gives the same graph (every
operator, weight and quantization parameter). That path leaves the file without a
signature, and LiteRT's CompiledModel API (`tledge bench --api compiled`) runs a model
by its signature, so this module adds the one the SavedModel path writes: key
``serving_default``, input ``image``, output ``output_0``, on the first subgraph, with
the I/O tensors named as that path names them.
"""

from __future__ import annotations

from trainer.export.schema import TFLITE_IDENTIFIER, tflite_schema

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "output_0"
#: The I/O tensor names of the SavedModel path, kept so both paths give the same names.
INPUT_TENSOR_NAME = f"{SIGNATURE_KEY}_{INPUT_NAME}:0"
OUTPUT_TENSOR_NAME = "StatefulPartitionedCall:0"


def with_serving_signature(model_bytes: bytes) -> bytes:
    """`model_bytes` (one subgraph, one input, one output) with the serving signature.

    A file that already has a signature is returned unchanged.
    """
    import flatbuffers  # comes with the interpreter package, as in trainer.export.metadata

    schema = tflite_schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    if model.signatureDefs:
        return model_bytes
    graph = model.subgraphs[0]
    (index_in,), (index_out,) = list(graph.inputs), list(graph.outputs)
    graph.tensors[index_in].name = INPUT_TENSOR_NAME
    graph.tensors[index_out].name = OUTPUT_TENSOR_NAME
    signature = schema.SignatureDefT()
    signature.signatureKey = SIGNATURE_KEY
    signature.subgraphIndex = 0
    signature.inputs = [_tensor_map(schema, INPUT_NAME, index_in)]
    signature.outputs = [_tensor_map(schema, OUTPUT_NAME, index_out)]
    model.signatureDefs = [signature]
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _tensor_map(schema: object, name: str, index: int) -> object:
    entry = schema.TensorMapT()  # type: ignore[attr-defined]
    entry.name = name
    entry.tensorIndex = int(index)
    return entry
