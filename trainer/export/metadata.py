"""What a bundle says about its model: tledge.json / manifest.json, and the standard
TFLite model metadata embedded in the .tflite (see models/README.md).

The standard part is built from MediaPipe's metadata tables (image input, RGB,
normalisation mean 0 / std 1 because the model takes raw pixels; a classification output
with ``labels.txt`` as its TENSOR_AXIS_LABELS file), so MediaPipe Tasks' ImageClassifier
and the TFLite Raspberry Pi example show class names. ``tledge.json`` is recorded as a
model-level associated file and packed next to the labels, in an uncompressed zip
appended to the flatbuffer, as the TFLite metadata populator does.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.bundle import EMBEDDED_INFO_NAME, FORMAT_NAME, FORMAT_VERSION, LABELS_NAME, MODEL_NAME
from trainer import __version__
from trainer.errors import ExportError
from trainer.export.options import QuantizationMode
from trainer.export.schema import TFLITE_IDENTIFIER, tflite_schema
from trainer.export.tflite_inspect import TensorSummary, TfliteSummary

#: How edge/preprocess.py interpolates; recorded so other runtimes can match it.
INTERPOLATION = "area_when_shrinking_else_linear"


@dataclass(frozen=True)
class BundleFacts:
    """The run-side facts a bundle records (everything but the file's own tensors)."""

    name: str
    labels: tuple[str, ...]
    image_size: tuple[int, int]  # (height, width), pixels
    resize: str
    backbone: dict[str, Any]
    source_run: str
    quantization: QuantizationMode


def labels_text(labels: tuple[str, ...] | list[str]) -> bytes:
    """labels.txt: one label per line, UTF-8, a final newline."""
    return ("\n".join(labels) + "\n").encode("utf-8")


def _quant(tensor: TensorSummary) -> dict[str, Any] | None:
    if tensor.scale is None:
        return None
    return {"scale": tensor.scale, "zero_point": tensor.zero_point}


def bundle_info(facts: BundleFacts, summary: TfliteSummary, metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The tledge.json dict (manifest.json minus `model`), from the run and the real file."""
    tensor_in, tensor_out = summary.inputs[0], summary.outputs[0]
    height, width = facts.image_size
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tledge_version": __version__,
        "name": facts.name,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source_run": facts.source_run,
        "labels": list(facts.labels),
        "labels_file": LABELS_NAME,
        "backbone": dict(facts.backbone),
        "input": {
            "height": height,
            "width": width,
            "channels": 3,
            "color_order": "RGB",
            "dtype": tensor_in.dtype.lower(),
            "value_range": [0, 255],
            "mean": 0.0,
            "std": 1.0,
            "resize": facts.resize,
            "interpolation": INTERPOLATION,
            "quantization": _quant(tensor_in),
        },
        "output": {"dtype": tensor_out.dtype.lower(), "activation": "softmax", "quantization": _quant(tensor_out)},
        "quantization": facts.quantization.value,
        "metrics": dict(metrics or {}),
    }


def manifest(info: dict[str, Any], model_bytes: bytes) -> dict[str, Any]:
    """manifest.json = tledge.json + the model file's sha256 and size."""
    from edge.bundle import sha256_bytes

    return {**info, "model": {"file": MODEL_NAME, "sha256": sha256_bytes(model_bytes), "size_bytes": len(model_bytes)}}


def info_json(info: dict[str, Any]) -> bytes:
    """JSON as written into the bundle: UTF-8, non-ASCII kept as is, stable key order."""
    return (json.dumps(info, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


#: TFLite metadata parser version needed by what we write. Later schema members
#: (vocabulary files 1.0.1, subgraph process units 1.1.0, tensor groups 1.2.0, file
#: versions 1.4.1, custom metadata 1.5.0) are not used, so the initial version suffices.
MIN_PARSER_VERSION = "1.0.0"
METADATA_FIELD = "TFLITE_METADATA"  # name of the model.metadata entry readers look for
METADATA_IDENTIFIER = b"M001"  # flatbuffer file identifier of the metadata schema


def _metadata_buffer(model_bytes: bytes, facts: BundleFacts) -> bytes:
    """The TFLITE_METADATA flatbuffer, built with MediaPipe's metadata_info tables.

    (MediaPipe 1.2's MetadataPopulator cannot be imported: its wheel lacks the native
    version helper. The tables come from MediaPipe; only the packing is done here.)
    """
    import flatbuffers

    from trainer.deps import hidden

    # MediaPipe's tasks import TensorFlow, if installed, for their API docs' decorators
    # (mediapipe/tasks/python/core/optional_dependencies.py): 4-5 s of an int8 export that
    # otherwise never imports it (trainer.export.backbone_file). Without it they use no-ops.
    with hidden("tensorflow"):
        from mediapipe.tasks.metadata import metadata_schema_py_generated as md_fb
        from mediapipe.tasks.python.metadata.metadata_writers import (
            metadata_info,
            writer_utils,
        )

    general = metadata_info.GeneralMd(
        name=facts.name,
        version=__version__,
        description=(
            f"{len(facts.labels)}-class image classifier exported by tledge ({facts.quantization.value}); "
            "input: raw RGB pixels 0..255"
        ),
        author="tledge",
    ).create_metadata()
    image = metadata_info.InputImageTensorMd(
        name="image",
        description="Input image, RGB, raw pixels 0..255 (scaling is inside the model).",
        norm_mean=[0.0],
        norm_std=[1.0],
        color_space_type=md_fb.ColorSpaceType.RGB,
        tensor_type=writer_utils.get_input_tensor_types(bytearray(model_bytes))[0],
    ).create_metadata()
    score = metadata_info.ClassificationTensorMd(
        name="score",
        description="Softmax probability of each label.",
        label_files=[metadata_info.LabelFileMd(LABELS_NAME)],
        tensor_type=writer_utils.get_output_tensor_types(bytearray(model_bytes))[0],
    ).create_metadata()
    subgraph = md_fb.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    subgraph.outputTensorMetadata = [score]
    general.subgraphMetadata = [subgraph]
    general.associatedFiles = [
        metadata_info.AssociatedFileMd(
            EMBEDDED_INFO_NAME,
            "tledge bundle facts (JSON): labels, input size, resize policy, colour order, quantization, metrics",
            md_fb.AssociatedFileType.DESCRIPTIONS,
        ).create_metadata()
    ]
    general.minParserVersion = MIN_PARSER_VERSION
    builder = flatbuffers.Builder(0)
    builder.Finish(general.Pack(builder), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def _with_metadata_buffer(model_bytes: bytes, metadata: bytes) -> bytes:
    """The model flatbuffer with `metadata` stored as its TFLITE_METADATA entry."""
    import flatbuffers

    schema = tflite_schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    model.buffers = [*(model.buffers or []), buffer]
    entries = [m for m in model.metadata or [] if m.name not in (METADATA_FIELD, METADATA_FIELD.encode())]
    entry = schema.MetadataT()
    entry.name = METADATA_FIELD
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*entries, entry]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _append_zip(model_bytes: bytes, files: dict[str, bytes]) -> bytes:
    """Append the associated files as an uncompressed zip, as the metadata populator does."""
    stream = io.BytesIO(model_bytes)
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return stream.getvalue()


def embed_metadata(model_bytes: bytes, facts: BundleFacts, info: dict[str, Any]) -> bytes:
    """`model_bytes` (a bare converted model) with the standard metadata, labels.txt and
    tledge.json embedded. The graph and weights are unchanged."""
    try:
        with_metadata = _with_metadata_buffer(model_bytes, _metadata_buffer(model_bytes, facts))
    except (ValueError, RuntimeError, IndexError) as exc:
        raise ExportError(f"Cannot write the TFLite metadata: {exc}. Is the model an image classifier?") from None
    return _append_zip(with_metadata, {LABELS_NAME: labels_text(facts.labels), EMBEDDED_INFO_NAME: info_json(info)})


__all__ = ["BundleFacts", "bundle_info", "embed_metadata", "info_json", "labels_text", "manifest", "MODEL_NAME"]
