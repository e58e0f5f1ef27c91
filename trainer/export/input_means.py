"""Bias correction's statistics measured on the training run's float TFLite backbone, in a
process of its own, while the export imports TensorFlow and loads the Keras model.

Bias correction (`trainer.export.bias_correction`) needs, for every convolution, the mean
of its input per channel over the calibration images. Through Keras that is a compiled
forward pass of a probe model, which can only start once TensorFlow is imported and
model.keras loaded, and whose tracing costs more than the pass (2.7 s of the stand-in's
export). When run.json names a feature cache, the cache holds the float `.tflite` copy of
the very backbone model.keras carries (`trainer.features.tflite_engine`; frozen: run.json
names no cache after fine-tuning). This module makes every convolution's input a graph
output of that file, runs the calibration images through it with the edge runtime's
interpreter (the same float32 samples the Keras pass would see,
`trainer.export.convert.representative_images`), and returns per convolution the name
of its output tensor (which names the Keras layers it was converted from), the shape of
its input in the file and the input's mean per channel. `bias_correction` matches them to
the Keras convolutions by layer name and shape, and measures through Keras whatever it
cannot match.

`MeansWorker` runs it as ``python -m trainer.export.input_means SPEC OUT``, a process that
imports nothing of TensorFlow; any failure there means the Keras pass runs instead.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.preprocess import ResizePolicy

__all__ = ["ConvMean", "MeansSpec", "MeansWorker", "conv_input_means"]

_BATCH = 8  # images per invoke: larger batches only add memory (52 inputs are outputs)


@dataclass(frozen=True)
class ConvMean:
    """One convolution of the float backbone file, in graph order."""

    name: str  # its output tensor's name: "…/block_1_depthwise_1/depthwise;…"
    shape: tuple[int, int, int]  # (height, width, channels) of its input in the file
    mean: np.ndarray  # (channels,) float64: the input's mean over images and positions


@dataclass(frozen=True)
class MeansSpec:
    """What the worker measures: the images at `paths`, decoded as the exporter decodes
    them, through the float backbone at `tflite`."""

    tflite: Path
    paths: tuple[str, ...]
    size: tuple[int, int]
    policy: ResizePolicy
    threads: int = 1


def _conv_inputs(content: bytes) -> tuple[list[tuple[int, str, tuple[int, int, int]]], bytes]:
    """(input tensor, output name, input shape) of every CONV_2D / DEPTHWISE_CONV_2D of
    subgraph 0, and the model with each such input made a graph output."""
    from trainer.export.calibration import Unsupported, tensor_indices, with_outputs
    from trainer.export.schema import tflite_schema

    schema = tflite_schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    if len(model.subgraphs) != 1:
        raise Unsupported(f"the backbone file has {len(model.subgraphs)} subgraphs")
    graph = model.subgraphs[0]
    kinds = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D}
    found = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) not in kinds:
            continue
        source = tensor_indices(op.inputs)[0]
        shape = tuple(int(d) for d in graph.tensors[source].shape)
        if len(shape) != 4:
            raise Unsupported(f"a convolution's input has shape {list(shape)}")
        name = graph.tensors[tensor_indices(op.outputs)[0]].name
        found.append((source, name.decode() if isinstance(name, bytes) else str(name), shape[1:]))
    if not found:
        raise Unsupported("the backbone file has no convolution")
    return found, with_outputs(model, tuple(sorted({index for index, _, _ in found})))


def conv_input_means(content: bytes, images: np.ndarray, threads: int = 1) -> list[ConvMean]:
    """Per convolution of the float backbone `content`, its input's mean per channel over
    `images` ((N, H, W, 3) uint8, decoded and resized), fed as the calibration samples."""
    from edge.runtime import make_interpreter
    from trainer.export.convert import representative_images

    convs, measured = _conv_inputs(content)
    interpreter, _ = make_interpreter(measured, threads=threads)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, [_BATCH, *images.shape[1:]])
    interpreter.allocate_tensors()
    sums = [np.zeros(shape[-1], np.float64) for _, _, shape in convs]
    samples = [sample[0] for (sample,) in representative_images(images)()]  # (H, W, 3) float32 each
    for start in range(0, len(samples), _BATCH):
        chunk = samples[start : start + _BATCH]
        batch = np.zeros((_BATCH, *chunk[0].shape), np.float32)
        batch[: len(chunk)] = chunk
        interpreter.set_tensor(index, batch)
        interpreter.invoke()
        for k, (tensor, _, _) in enumerate(convs):
            view = interpreter.tensor(tensor)()
            # per image and channel in float32 (as the Keras pass reduces), summed in float64
            sums[k] += view[: len(chunk)].mean(axis=(1, 2)).astype(np.float64).sum(axis=0)
            del view  # no view may be held across the next set_tensor / invoke
    return [ConvMean(name, shape, total / len(samples)) for (_, name, shape), total in zip(convs, sums)]


class MeansWorker:
    """`conv_input_means` of a `MeansSpec`, running in a process of its own from construction;
    `result()` waits for it and gives the means, or None when it failed (the reason in
    `failure`)."""

    def __init__(self, spec: MeansSpec) -> None:
        self.failure: str | None = None
        self._folder = tempfile.TemporaryDirectory(prefix="tledge-means-")
        folder = Path(self._folder.name)
        (folder / "spec.pickle").write_bytes(pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL))
        self._stderr = open(folder / "stderr", "w+b")  # a file: never blocks the worker
        self._process = subprocess.Popen(
            [sys.executable, "-m", "trainer.export.input_means", str(folder / "spec.pickle"), str(folder / "means.pickle")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
        )
        self._means: list[ConvMean] | None = None
        self._done = False

    def result(self) -> list[ConvMean] | None:
        if self._done:
            return self._means
        try:
            code = self._process.wait()
        except BaseException:  # interrupted while waiting: do not leave the worker running
            self.close()
            raise
        try:
            if code == 0:
                self._means = pickle.loads((Path(self._folder.name) / "means.pickle").read_bytes())
            else:
                self._stderr.seek(0)
                lines = self._stderr.read().decode(errors="replace").strip().splitlines() or [f"exit status {code}"]
                self.failure = lines[-1]
        except Exception as exc:  # an unreadable result: the Keras pass measures instead
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.close()
        return self._means

    def __enter__(self) -> "MeansWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker if it still runs, and remove its files."""
        if self._done:
            return
        self._done = True
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._stderr.close()
        self._folder.cleanup()


def main(argv: Sequence[str]) -> int:
    from trainer.export.decoding import load_image
    from trainer.export.input_means import conv_input_means  # the module's own classes, not __main__'s, get pickled

    spec: MeansSpec = pickle.loads(Path(argv[0]).read_bytes())
    images = np.stack([load_image(path, spec.size, spec.policy, "Calibration") for path in spec.paths])
    means = conv_input_means(spec.tflite.read_bytes(), images, spec.threads)  # noqa: F811
    Path(argv[1]).write_bytes(pickle.dumps(means, protocol=pickle.HIGHEST_PROTOCOL))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
