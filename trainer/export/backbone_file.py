"""The int8 export of a training run from its float backbone file and its head: no Keras
model loaded, nothing traced, no `import tensorflow`.

`tledge train` keeps a float32 .tflite copy of the frozen feature model (raw pixels ->
pooled features, checked against Keras) in the feature cache that run.json names; run.json
names it only while the saved model's backbone is that one (no kept fine-tuning). The
classifier is that feature model, a dropout (nothing at inference) and one dense softmax
layer. So its float file is the backbone file with FULLY_CONNECTED and SOFTMAX appended
(`classifier_file`), the head's weights read from model.keras' own HDF5 weights
(`trainer.keras_file.read_head`, h5py; no Keras). The rest is what TensorFlow's converter does to the float
file it makes from the Keras model, done to this one:

- bias correction (`corrected_biases`): the converter's file has each BatchNorm folded
  into its convolution, so the correction that `trainer.export.bias_correction` makes to
  a BatchNorm's moving mean is, in the file, dW . E[x] taken off the convolution's bias,
  with dW the int8 rounding error of the folded kernel (per output channel, as the
  quantizer rounds it) and E[x] the input means the bias-means worker measured on this
  very file (`trainer.export.input_means`);
- TensorFlow's calibrator on shards of the calibration images at once, every shard in a
  worker process that loads the calibrator's extension from its file
  (`trainer.export.calibration_shards.calibrate_in_workers`);
- TensorFlow's MLIR quantizer, the converter's own call, in a worker that loads the
  converter's extension from its file while the calibration runs
  (`trainer.export.quantize_worker`).

The int8 file is not byte for byte the Keras path's: behind a ZeroPadding2D the Keras
path's mean counts the padded zeros, while the file's convolution pads inside itself
(4 of MobileNetV2's 52 convolutions; tests/export/test_backbone_file.py checks each step
against the Keras path). Anything else (a run without that file, a head that is not one
dense softmax layer, a file of another shape, a worker that fails) raises `NotApplicable`
and the exporter converts the Keras model as before; report.json's `converted_from` says
which ran.
"""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainer import keras_file
from trainer.export.bias_correction import rounding_error_along
from trainer.export.schema import TFLITE_IDENTIFIER, tflite_schema
from trainer.head import DenseHead

if TYPE_CHECKING:
    from trainer.export.convert import Converted
    from trainer.export.input_means import ConvMean
    from trainer.export.options import IOType

#: report.json's `converted_from` for a file made here ("keras": TensorFlow's converter on the Keras model).
BACKBONE_FILE = "backbone_file"
_QUANTIZE_WORKER = Path(__file__).with_name("quantize_worker.py")
_WORKER_TIMEOUT_S = 300.0


class NotApplicable(Exception):
    """The Keras model must be converted instead (the message says why)."""


def read_head(model_path: Path, classes: int) -> DenseHead:
    """The dense softmax layer of the classifier saved at `model_path` (model.keras),
    read without Keras (trainer.keras_file)."""
    try:
        return keras_file.read_head(model_path, classes)
    except keras_file.KerasFileError as exc:
        raise NotApplicable(str(exc)) from None


def classifier_file(backbone: bytes, head: DenseHead) -> bytes:
    """The float classifier: the backbone file (pixels -> pooled features) with the head
    appended as FULLY_CONNECTED and SOFTMAX, batch fixed at 1 (as the converter fixes it)."""
    import flatbuffers

    schema = tflite_schema()
    model = _parsed(backbone)
    if len(model.subgraphs) != 1 or model.signatureDefs:
        raise NotApplicable("the backbone file has several subgraphs or signatures")
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise NotApplicable("the backbone file does not have one input and one output")
    features = int(graph.outputs[0])
    shape = [int(d) for d in graph.tensors[features].shape]
    if shape != [1, head.kernel.shape[0]] or graph.tensors[features].type != schema.TensorType.FLOAT32:
        raise NotApplicable(f"the backbone file gives {shape}, the head takes {head.kernel.shape[0]} features")
    for tensor in graph.tensors:  # every tensor's shape already has batch 1
        tensor.shapeSignature = None
    classes = head.bias.shape[0]

    def buffer(array: np.ndarray | None) -> int:
        entry = schema.BufferT()
        if array is not None:
            entry.data = np.frombuffer(np.ascontiguousarray(array, np.float32).tobytes(), np.uint8)
        model.buffers.append(entry)
        return len(model.buffers) - 1

    def tensor(name: str, dims: list[int], data: np.ndarray | None) -> int:
        entry = schema.TensorT()
        entry.name, entry.shape, entry.type, entry.buffer = name.encode(), np.array(dims, np.int32), schema.TensorType.FLOAT32, buffer(data)
        graph.tensors.append(entry)
        return len(graph.tensors) - 1

    def operator(code: int, inputs: list[int], outputs: list[int], kind: int, options: object) -> None:
        index = next((i for i, c in enumerate(model.operatorCodes) if c.builtinCode == code), None)
        if index is None:
            entry = schema.OperatorCodeT()
            entry.builtinCode, entry.deprecatedBuiltinCode, entry.version = code, min(code, 127), 1
            model.operatorCodes.append(entry)
            index = len(model.operatorCodes) - 1
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = index, np.array(inputs, np.int32), np.array(outputs, np.int32)
        op.builtinOptionsType, op.builtinOptions = kind, options
        graph.operators.append(op)

    kernel = tensor("probs/kernel", [classes, head.kernel.shape[0]], head.kernel.T)  # TFLite: (out, in)
    bias = tensor("probs/bias", [classes], head.bias)
    logits, probs = tensor("probs/logits", [1, classes], None), tensor("probs", [1, classes], None)
    dense = schema.FullyConnectedOptionsT()
    dense.fusedActivationFunction, dense.keepNumDims = schema.ActivationFunctionType.NONE, False
    operator(schema.BuiltinOperator.FULLY_CONNECTED, [features, kernel, bias], [logits], schema.BuiltinOptions.FullyConnectedOptions, dense)
    softmax = schema.SoftmaxOptionsT()
    softmax.beta = 1.0
    operator(schema.BuiltinOperator.SOFTMAX, [logits], [probs], schema.BuiltinOptions.SoftmaxOptions, softmax)
    graph.outputs = np.array([probs], np.int32)
    builder = flatbuffers.Builder(len(backbone) + head.kernel.nbytes + 4096)
    builder.Finish(model.Pack(builder), TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _parsed(content: bytes) -> object:
    """The file as the schema's object tree; `NotApplicable` when it is not a TFLite file."""
    schema = tflite_schema()
    if len(content) < 8 or content[4:8] != TFLITE_IDENTIFIER:
        raise NotApplicable("the backbone file is not a TFLite file")
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
        graphs = list(model.subgraphs or ())
        readable = len(graphs) == 1 and all(isinstance(t.shape, np.ndarray) for t in graphs[0].tensors or ())
    except Exception as exc:  # noqa: BLE001 - the generated reader raises whatever a damaged table gives
        raise NotApplicable(f"the backbone file cannot be read ({type(exc).__name__})") from None
    if not readable:
        raise NotApplicable("the backbone file is not one graph of shaped tensors")
    return model


def bias_shift(error: np.ndarray, mean: np.ndarray, depthwise: bool) -> np.ndarray:
    """The mean change of each output channel that a change `error` of a file's kernel
    causes on inputs whose per-channel mean is `mean`: dW . E[x] (border effects ignored).
    CONV_2D kernels are (out, kh, kw, in); DEPTHWISE_CONV_2D kernels (1, kh, kw, channels)."""
    return (error[0] * mean).sum(axis=(0, 1)) if depthwise else np.einsum("ohwi,i->o", error, mean)


def corrected_biases(content: bytes, means: Sequence["ConvMean"]) -> tuple[bytes, int]:
    """`content` with each convolution's bias lowered by the mean shift int8 rounding of its
    kernel causes (dW . E[x], per output channel), E[x] from `means` (matched by the
    convolution's output tensor name). A bias tensor that several operators share (the
    converter merges equal constants) gets a copy per operator first. (file, convolutions
    corrected); `NotApplicable` unless every convolution has its mean and a float bias."""
    import copy

    import flatbuffers

    schema = tflite_schema()
    model = _parsed(content)
    graph = model.subgraphs[0]
    by_name = {m.name: m for m in means}
    uses: dict[int, int] = {}  # bias tensor -> operators reading it
    for op in graph.operators:
        for index in op.inputs:
            uses[int(index)] = uses.get(int(index), 0) + 1
    holders: dict[int, int] = {}  # buffer -> tensors holding it
    for tensor in graph.tensors:
        holders[tensor.buffer] = holders.get(tensor.buffer, 0) + 1
    codes = {schema.BuiltinOperator.CONV_2D: False, schema.BuiltinOperator.DEPTHWISE_CONV_2D: True}
    corrected = 0
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex].builtinCode
        if code not in codes:
            continue
        depthwise = codes[code]
        name = graph.tensors[op.outputs[0]].name.decode()
        mean = by_name.get(name)
        if mean is None or len(op.inputs) < 3 or op.inputs[2] < 0:
            raise NotApplicable(f"no input mean or no bias for convolution {name}")
        weights, bias = graph.tensors[op.inputs[1]], graph.tensors[op.inputs[2]]
        if bias.type != schema.TensorType.FLOAT32 or weights.type != schema.TensorType.FLOAT32 or bias.quantization is not None and (
            bias.quantization.scale is not None
        ):
            raise NotApplicable(f"convolution {name} has no float bias")
        kernel = np.frombuffer(model.buffers[weights.buffer].data.tobytes(), np.float32).reshape(weights.shape).astype(np.float64)
        # CONV_2D (out, kh, kw, in), scales per out; DEPTHWISE_CONV_2D (1, kh, kw, channels), per channel
        error = rounding_error_along(kernel, 3 if depthwise else 0)
        if error.shape[-1] != mean.mean.shape[0]:
            raise NotApplicable(f"convolution {name} reads {error.shape[-1]} channels, its mean has {mean.mean.shape[0]}")
        shift = bias_shift(error, mean.mean, depthwise)
        values = np.frombuffer(model.buffers[bias.buffer].data.tobytes(), np.float32).astype(np.float64) - shift
        if uses[int(op.inputs[2])] > 1 or holders[bias.buffer] > 1:  # shared: this operator's own copy
            bias = copy.copy(bias)
            bias.name = bias.name + f"/corrected_{corrected}".encode()
            model.buffers.append(schema.BufferT())
            bias.buffer = len(model.buffers) - 1
            graph.tensors.append(bias)
            op.inputs[2] = len(graph.tensors) - 1
        model.buffers[bias.buffer].data = np.frombuffer(values.astype(np.float32).tobytes(), np.uint8)
        corrected += 1
    if not corrected:
        raise NotApplicable("the backbone file has no convolutions to correct")
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), TFLITE_IDENTIFIER)
    return bytes(builder.Output()), corrected


def tensorflow_extension(relative_dir: str, stem: str) -> str:
    """The file of one of TensorFlow's compiled extension modules, found without importing
    TensorFlow (`NotApplicable` when it is not installed as expected)."""
    try:
        spec = importlib.util.find_spec("tensorflow")
    except (ImportError, ValueError):
        spec = None
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        hits = sorted((Path(root) / relative_dir).glob(f"{stem}*.so"))
        if hits:
            return str(hits[0])
    raise NotApplicable(f"TensorFlow's {stem} extension was not found")


class QuantizeWorker:
    """`quantize_worker` in a process of its own from construction (it loads TensorFlow's
    converter extension meanwhile); `quantize(calibrated)` hands it the calibrated model."""

    def __init__(self, io_type: str) -> None:
        self._io = io_type
        self._folder = tempfile.TemporaryDirectory(prefix="tledge-quantize-")
        self._output = Path(self._folder.name) / "quantized.tflite"
        self._log = Path(self._folder.name) / "worker.log"
        api = tensorflow_extension("compiler/mlir/lite/python", "_pywrap_converter_api")
        try:
            with self._log.open("wb") as stderr:  # a file, not a pipe: the quantizer's C++ log never blocks it
                self._process = subprocess.Popen(
                    [sys.executable, str(_QUANTIZE_WORKER), api, str(self._output)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr
                )
        except OSError as exc:
            self._folder.cleanup()
            raise NotApplicable(f"the quantization worker could not start: {exc}") from None

    def quantize(self, calibrated: bytes) -> bytes:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(pickle.dumps((calibrated, self._io, self._io), protocol=pickle.HIGHEST_PROTOCOL))
            self._process.stdin.close()
        except OSError:
            pass  # the worker died: its log says why, below
        try:
            code = self._process.wait(timeout=_WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise NotApplicable("the quantization worker did not finish") from None
        if code != 0 or not self._output.is_file():
            lines = self._log.read_text(errors="replace").strip().splitlines() or [f"exit status {code}"]
            raise NotApplicable(f"the quantization worker failed: {lines[-1]}")
        return self._output.read_bytes()

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._folder.cleanup()

    def __enter__(self) -> "QuantizeWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def convert_from_backbone(
    backbone: Path, head: DenseHead, io_type: "IOType", samples: list[list[np.ndarray]],
    input_means: "Callable[[], Sequence[ConvMean] | None] | None", shards: int,
) -> "Converted":
    """The int8 file of the classifier made of the float backbone file `backbone` and
    `head` (`read_head`), calibrated on `samples` (lists of one (1, H, W, 3) float32 array,
    as the converter's representative dataset gives them) by TensorFlow's calibrator on
    `shards` shards at once. `input_means` gives bias correction's input means measured on
    `backbone` (None: no bias correction). `NotApplicable` when the Keras model must be
    converted instead."""
    from trainer.export.calibration import Unsupported
    from trainer.export.calibration_shards import calibrate_in_workers
    from trainer.export.convert import Converted
    from trainer.export.options import CalibratorKind
    from trainer.export.signature import with_serving_signature

    wrapper = tensorflow_extension("lite/python", "_pywrap_tensorflow_lite_calibration_wrapper")
    try:
        content = backbone.read_bytes()
    except OSError as exc:
        raise NotApplicable(f"cannot read the backbone file: {exc}") from None
    with QuantizeWorker(io_type.value) as quantizer:
        content = classifier_file(content, head)
        means_from = None
        if input_means is not None:
            measured = input_means()
            if not measured:
                raise NotApplicable("bias correction's input means were not measured on the backbone file")
            content, _ = corrected_biases(content, measured)
            means_from = "tflite"
        try:
            calibrated, used = calibrate_in_workers(content, wrapper, samples, shards)
        except Unsupported as why:
            raise NotApplicable(f"calibration: {why}") from None
        raw = quantizer.quantize(calibrated)
    return Converted(with_serving_signature(raw), CalibratorKind.TENSORFLOW, None, used, None, means_from, source=BACKBONE_FILE)
