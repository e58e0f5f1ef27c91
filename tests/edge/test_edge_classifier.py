"""The classifier on real .tflite files: dtypes, dequantization, colour order, parity
with the Keras model, third-party models with a labels file, and the runtime's errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edge.bundle import load_model_info
from edge.classifier import Classifier
from edge.errors import DelegateError, ModelError
from edge.preprocess import ResizePolicy, resize_rgb
from edge.runtime import CompiledModelRunner, available_backends
from edge_models import LABELS, SIZE, colour_images


@pytest.mark.parametrize("mode, dtype", [("float32", np.float32), ("uint8", np.uint8), ("int8", np.int8)])
def test_every_io_dtype_classifies_colours_in_rgb_order(colour_tflites, labels_file, mode, dtype, tmp_path) -> None:
    """Integer models as bare .tflite + labels file (third-party style); the float model in a
    bundle, since a bare float model is assumed to take [-1, 1] like Google's."""
    from edge_models import write_bundle

    if mode == "float32":
        info = load_model_info(write_bundle(tmp_path / "f", colour_tflites[mode].read_bytes(), quantization=mode))
    else:
        info = load_model_info(colour_tflites[mode], labels_path=labels_file)
    clf = Classifier(info, threads=1)
    assert clf.input_dtype == dtype and clf.output_dtype == dtype
    for k, label in enumerate(LABELS):
        frame_rgb = np.zeros((48, 64, 3), np.uint8)
        frame_rgb[:] = [(230, 20, 20), (20, 230, 20), (20, 20, 230), (128, 128, 128)][k]
        prediction = clf.classify(frame_rgb, top_k=4)
        assert prediction.label == label, (mode, label, prediction.top)
        # Dequantized with the tensor's own parameters: a probability distribution.
        assert prediction.scores.dtype == np.float32
        assert 0.95 <= float(prediction.scores.sum()) <= 1.05
        assert [t[0] for t in prediction.top] == list(np.argsort(-prediction.scores, kind="stable")[:4])


def test_int8_output_is_dequantized_with_its_own_scale_and_zero_point(colour_tflites, labels_file) -> None:
    clf = Classifier(load_model_info(colour_tflites["int8"], labels_path=labels_file), threads=1)
    scale, zero_point = clf.output_quant
    assert zero_point != 0  # int8 softmax output: zero point -128, so a wrong formula shows
    tensor = clf.preprocess(colour_images(1, (40, 40), seed=0)[0])
    clf.interpreter.set_tensor(clf._in["index"], tensor)
    clf.interpreter.invoke()
    raw = clf.interpreter.get_tensor(clf._out["index"])[0]
    np.testing.assert_allclose(clf.invoke(tensor), (raw.astype(np.float32) - zero_point) * scale, rtol=1e-6)


@pytest.mark.parametrize("mode, tolerance", [("float32", 1e-4), ("uint8", 0.06), ("int8", 0.06)])
@pytest.mark.parametrize("policy", list(ResizePolicy))
def test_parity_with_the_keras_model(keras_colour_model, colour_tflites, labels_file, mode, tolerance, policy, tmp_path) -> None:
    """Same images (odd shapes, so resizing matters) through Keras and the edge runtime."""
    from edge_models import write_bundle

    bundle = write_bundle(tmp_path / f"b_{mode}", colour_tflites[mode].read_bytes(), resize=policy.value, quantization=mode)
    clf = Classifier(load_model_info(bundle), threads=1)
    assert clf.info.resize is policy
    images = colour_images(8, (45, 70), seed=11) + colour_images(4, (90, 30), seed=12)
    batch = np.stack([resize_rgb(img, (SIZE, SIZE), policy) for img in images]).astype(np.float32)
    keras_scores = keras_colour_model.predict(batch, verbose=0)
    for img, expected in zip(images, keras_scores):
        got = clf.classify(img, top_k=1)
        assert got.index == int(np.argmax(expected))
        np.testing.assert_allclose(got.scores, expected, atol=tolerance)


def test_compiled_model_api_gives_the_interpreters_output(colour_tflites) -> None:
    data = colour_tflites["uint8"].read_bytes()
    clf = Classifier(load_model_info(colour_tflites["uint8"]), threads=1)
    runner = CompiledModelRunner(data, threads=1)
    for img in colour_images(4, (SIZE, SIZE), seed=5):
        tensor = clf.preprocess(img)
        clf.interpreter.set_tensor(clf._in["index"], tensor)
        clf.interpreter.invoke()
        np.testing.assert_array_equal(runner.run(tensor), clf.interpreter.get_tensor(clf._out["index"]))
    runner.close()


def test_backends_are_ai_edge_litert_first() -> None:
    names = [b.name for b in available_backends()]
    assert names and names[0] == "ai_edge_litert"


def test_no_backend_names_the_install_command(tmp_path) -> None:
    code = textwrap.dedent(
        """
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('ai_edge_litert', 'tflite_runtime'):
                    raise ImportError('blocked')
        sys.meta_path.insert(0, Block())
        from edge.runtime import get_backend
        from edge.errors import RuntimeMissingError
        try:
            get_backend()
        except RuntimeMissingError as exc:
            print(exc)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install ai-edge-litert" in result.stdout, result.stderr


def test_missing_delegate_library_is_a_clear_error(colour_tflites) -> None:
    with pytest.raises(DelegateError, match="libedgetpu1-std"):
        Classifier(load_model_info(colour_tflites["uint8"]), delegate="libedgetpu.so.1")


def test_a_library_that_is_not_a_delegate_is_a_clear_error(colour_tflites) -> None:
    import ctypes.util

    libm = ctypes.util.find_library("m")
    if libm is None:
        pytest.skip("no libm to stand in for a wrong library")
    with pytest.raises(DelegateError, match="not a TFLite external delegate"):
        Classifier(load_model_info(colour_tflites["uint8"]), delegate=libm)


def test_labels_that_do_not_match_the_outputs_are_refused(colour_tflites, tmp_path) -> None:
    bad = tmp_path / "labels.txt"
    bad.write_text("a\nb\nc\n")
    with pytest.raises(ModelError, match="3 entries but the model has 4 outputs"):
        Classifier(load_model_info(colour_tflites["uint8"], labels_path=bad))


def test_bundle_carries_its_labels_and_is_verified(colour_bundle, tmp_path) -> None:
    clf = Classifier(load_model_info(colour_bundle))
    assert clf.labels == LABELS and clf.info.is_tledge_bundle
    # The same bytes with a model file altered after export: refused by the sha256 check.
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(colour_bundle, copy)
    data = bytearray((copy / "model.tflite").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its manifest"):
        load_model_info(copy)


@pytest.mark.slow
def test_google_imagenet_model_names_cat_and_espresso(shared) -> None:
    model = shared / "models" / "mobilenet_v2_1.0_224_quant.tflite"
    clf = Classifier(load_model_info(model, labels_path=shared / "models" / "imagenet_labels.txt"))
    assert clf.labels[0] == "background" and clf.num_classes == 1001
    from edge.images import load_rgb

    cat = clf.classify(load_rgb(shared / "images" / "chelsea.png"), top_k=1)
    coffee = clf.classify(load_rgb(shared / "images" / "coffee.png"), top_k=1)
    assert "cat" in cat.label, cat.top
    assert "espresso" in coffee.label or "coffee" in coffee.label, coffee.top
