"""The int8 export from the training run's float backbone file and its head
(trainer.export.backbone_file), step by step against the Keras path: the float file
answers as the Keras classifier, its bias correction moves each bias as the Keras path's,
the calibration is TensorFlow's (its shards: test_calibration_shards.py), and the quantizer
worker makes TensorFlow's own file. The export imports no TensorFlow, and what the file
path cannot do goes to the Keras model. Both paths on real photos, held to the same
agreement bar: test_calibration_guard.py.

On a real `tledge train` run (MobileNetV2 alpha 0.35 at 48 px, random weights, TFLite
feature engine, a disk cache of its own).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from export_helpers import cli_int8_export, cli_tiny_train
from tledge_paths import ROOT


@pytest.fixture(scope="module")
def tiny_run(synthetic_dataset, tmp_path_factory):
    """(run folder, its feature cache root): trained by `tledge train` with a disk cache."""
    cache = tmp_path_factory.mktemp("backbone-file-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TLEDGE_CACHE", str(cache))
        run_dir = Path(cli_tiny_train(synthetic_dataset, tmp_path_factory.mktemp("backbone-file-runs"), "tflite")["run_dir"])
    return run_dir, cache


@pytest.fixture(scope="module")
def parts(tiny_run):
    """(run, backbone file bytes, head, decoded val + test images (N, H, W, 3) uint8)."""
    from edge.images import load_rgb
    from edge.preprocess import resize_rgb
    from trainer.export.backbone_file import read_head
    from trainer.export.float_side import feature_cache_of
    from trainer.features.tflite_engine import cached_tflite_path
    from trainer.run_dir import read_run

    run = read_run(tiny_run[0])
    backbone = cached_tflite_path(*feature_cache_of(run.run)).read_bytes()
    items = run.splits["val"] + run.splits["test"]
    images = np.stack([resize_rgb(load_rgb(path), run.image_size, run.resize) for path, _ in items]).astype(np.uint8)
    return run, backbone, read_head(run.model_path, len(run.labels)), images


def _outputs(content: bytes, images: np.ndarray) -> np.ndarray:
    from edge.runtime import make_interpreter

    interpreter, _ = make_interpreter(content, threads=1)
    given, wanted = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    out = []
    for image in images:
        interpreter.set_tensor(given["index"], image[None].astype(given["dtype"]))
        interpreter.invoke()
        out.append(interpreter.get_tensor(wanted["index"])[0].copy())
    return np.array(out)


def _samples(images: np.ndarray) -> list:
    from trainer.export.convert import representative_images

    return list(representative_images(images)())


def test_the_float_file_answers_as_the_keras_classifier(parts):
    import keras

    from trainer.export.backbone_file import classifier_file
    from trainer.export.float_side import dense_weights

    run, backbone, head, images = parts
    model = keras.models.load_model(run.model_path, compile=False)
    kernel, bias = dense_weights(model)
    np.testing.assert_array_equal(head.kernel, kernel)
    np.testing.assert_array_equal(head.bias, bias)
    ours = _outputs(classifier_file(backbone, head), images)
    theirs = model.predict(images.astype(np.float32), verbose=0)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_bias_correction_in_the_file_is_the_keras_paths(parts):
    """Each convolution's bias moves in the corrected file as in the Keras path's float file
    (the BatchNorms corrected, then folded by the converter), given the same input means.
    Behind a ZeroPadding2D the Keras path counts the padded zeros in the mean, the file's
    convolution pads inside itself and its mean has none: there the Keras shift is the
    file's times the unpadded share of the padded input."""
    import keras

    from trainer.export.backbone_file import classifier_file, corrected_biases
    from trainer.export.bias_correction import bias_corrected_in_place
    from trainer.export.convert import _batches, convert, representative_images
    from trainer.export.input_means import conv_input_means
    from trainer.export.options import QuantizationMode

    run, backbone, head, images = parts
    means = conv_input_means(backbone, images[:16])
    plain = classifier_file(backbone, head)
    ours, corrected = corrected_biases(plain, means)
    model = keras.models.load_model(run.model_path, compile=False)
    keras_plain = convert(model, QuantizationMode.FLOAT32)
    with bias_corrected_in_place(model, _batches(representative_images(images[:16])), means) as correction:
        assert correction.means_from == "tflite"
        theirs = convert(model, QuantizationMode.FLOAT32)
    ours_shift = [a - b for a, b in zip(_conv_biases(ours), _conv_biases(plain))]
    keras_shift = [a - b for a, b in zip(_conv_biases(theirs), _conv_biases(keras_plain))]
    assert len(ours_shift) == len(keras_shift) == corrected == len(means) == 52
    padded = 0
    for mean, a, b in zip(means, ours_shift, keras_shift):
        height, width = mean.shape[:2]
        keras_height, keras_width = _keras_input(mean.name, model)
        share = (height * width) / (keras_height * keras_width)
        padded += share != 1
        np.testing.assert_allclose(a * share, b, rtol=1e-3, atol=1e-3 * float(np.abs(b).max()) + 1e-12, err_msg=mean.name)
    assert padded == 4


def _conv_biases(content: bytes) -> list[np.ndarray]:
    from trainer.export.schema import tflite_schema

    schema = tflite_schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    graph = model.subgraphs[0]
    convs = (schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D)
    out = []
    for op in graph.operators:
        if model.operatorCodes[op.opcodeIndex].builtinCode in convs:
            out.append(np.frombuffer(model.buffers[graph.tensors[op.inputs[2]].buffer].data.tobytes(), np.float32))
    return out


def _keras_input(file_name: str, model) -> tuple[int, int]:
    """The Keras input (height, width) of the convolution a file's op name refers to."""
    from trainer.export.bias_correction import _file_op, find_conv_norms

    for _, pair in find_conv_norms(model):
        if _file_op(pair.conv.name).search(file_name):
            return int(pair.conv.input.shape[1]), int(pair.conv.input.shape[2])
    raise AssertionError(f"no Keras convolution for {file_name}")


def test_the_quantize_worker_makes_tensorflows_file(parts):
    """The same bytes as TensorFlow's own `mlir_quantize` call on the same calibrated model."""
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    from trainer.export.backbone_file import QuantizeWorker, classifier_file, tensorflow_extension
    from trainer.export.calibration_shards import calibrate_in_workers

    _, backbone, head, images = parts
    wrapper = tensorflow_extension("lite/python", "_pywrap_tensorflow_lite_calibration_wrapper")
    calibrated, shards = calibrate_in_workers(classifier_file(backbone, head), wrapper, _samples(images[:24]), 2)
    assert shards == 2
    for io, dtype in (("uint8", tf.uint8), ("int8", tf.int8)):
        with QuantizeWorker(io) as worker:
            ours = worker.quantize(calibrated)
        assert ours == bytes(mlir_quantize(calibrated, False, input_data_type=dtype, output_data_type=dtype)), io


def test_int8_export_from_the_backbone_file_imports_no_tensorflow(tiny_run, tmp_path):
    """`tledge export RUN --quantize` in a process of its own: the file comes from the
    backbone file, verified, and neither TensorFlow nor Keras is imported."""
    run_dir, cache = tiny_run
    code = f"""
        import json, sys
        sys.argv = ['tledge', 'export', {str(run_dir)!r}, '--quantize', '--calibration-images', '40', '--out', {str(tmp_path / 'bundle')!r}, '--accept-drop', '--json']
        from edge.cli import main
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))))
        """
    env = {**os.environ, "TLEDGE_CACHE": str(cache)}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == []
    report = json.loads(lines[-2])
    assert report["converted_from"] == "backbone_file"
    assert report["bias_correction_means"] == "tflite"
    assert report["calibrator"] == "tensorflow" and report["float_side"] == "features+head"
    assert (tmp_path / "bundle" / "model.tflite").is_file()


def test_what_the_file_path_refuses_goes_to_the_keras_model_with_a_note(tiny_run, tmp_path, monkeypatch):
    from trainer.export import backbone_file, exporter

    run_dir, cache = tiny_run
    monkeypatch.setenv("TLEDGE_CACHE", str(cache))

    def refuse(*args, **kwargs):
        raise backbone_file.NotApplicable("refused by the test")

    monkeypatch.setattr(backbone_file, "corrected_biases", refuse)
    report = cli_int8_export(run_dir, tmp_path / "bundle")
    assert report["converted_from"] == "keras"
    assert any(w.startswith(exporter.FILE_REFUSED) and w.endswith("refused by the test") for w in report["warnings"])
    assert report["passed"]


@pytest.mark.parametrize("damage", ["not a model", "two dense layers"])
def test_a_head_or_file_it_cannot_read_is_refused(parts, tmp_path, damage):
    import zipfile

    from trainer.export.backbone_file import NotApplicable, classifier_file, read_head

    run, backbone, head, _ = parts
    with pytest.raises(NotApplicable):
        if damage == "not a model":
            classifier_file(b"TFL3" * 8, head)
        else:
            copy = tmp_path / "model.keras"
            with zipfile.ZipFile(run.model_path) as source, zipfile.ZipFile(copy, "w") as target:
                for item in source.namelist():
                    data = source.read(item)
                    if item == "config.json":
                        config = json.loads(data)
                        config["config"]["layers"].insert(-1, dict(config["config"]["layers"][-1], name="extra"))
                        data = json.dumps(config).encode()
                    target.writestr(item, data)
            read_head(copy, len(run.labels))
