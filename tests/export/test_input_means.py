"""Bias correction's input means from the run's float TFLite backbone (trainer.export.input_means):
the same statistics as the Keras pass, matched to the Keras convolutions by name and shape,
measured in a worker process during the export, and the Keras pass whenever they cannot be."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export_helpers import cli_int8_export, cli_tiny_train

SIZE = 64  # MobileNetV2 pads before each stride-2 depthwise conv: 4 of its 52 convs at this size

BLOCK_TF = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'keras'):
            raise ImportError(f'{name} blocked by the test')
        return None
sys.meta_path.insert(0, Block())
from trainer.export.input_means import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def mobilenet():
    """(classifier, its nested backbone, the backbone's float .tflite as train converts it)."""
    import keras

    from trainer.features.tflite_engine import convert_to_tflite

    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=0.35, include_top=False, weights=None)
    rng = np.random.default_rng(0)
    for layer in backbone.layers:  # non-trivial statistics, as in trained weights
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n), rng.uniform(0.5, 2, n)])
    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)))
    features = keras.Model(inputs, pooled)
    classifier = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(pooled))
    return classifier, backbone, convert_to_tflite(features, SIZE)


def _images(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def test_backbone_file_means_match_the_keras_pass_for_every_conv(mobilenet):
    from trainer.export.bias_correction import _input_means, _measured_means, find_conv_norms
    from trainer.export.convert import _batches, representative_images
    from trainer.export.input_means import conv_input_means

    classifier, backbone, content = mobilenet
    images = _images(12)
    measured = conv_input_means(content, images)
    pairs = find_conv_norms(classifier)
    convs = [pair.conv for _, pair in pairs]
    assert len(measured) == len(convs) == 52
    assert sum(m.shape[:2] != tuple(c.input.shape[1:3]) for m, c in zip(measured, convs)) == 4  # the padded ones
    ours = _measured_means(convs, measured)
    assert ours is not None
    keras_pass = _input_means(classifier, backbone, convs, _batches(representative_images(images)))
    for conv, a, b in zip(convs, ours, keras_pass):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()), err_msg=conv.name)


def test_means_that_do_not_all_match_leave_it_to_the_keras_pass(mobilenet):
    from trainer.export.bias_correction import _measured_means, find_conv_norms
    from trainer.export.input_means import conv_input_means

    classifier, _, content = mobilenet
    measured = conv_input_means(content, _images(2))
    convs = [pair.conv for _, pair in find_conv_norms(classifier)]
    assert _measured_means(convs, measured) is not None
    assert _measured_means(convs, measured[:-1]) is None  # a conv without its op in the file
    assert _measured_means(convs, [*measured, measured[0]]) is None  # two ops answer one name
    other = replace(measured[5], shape=(*measured[5].shape[:2], measured[5].shape[2] + 1))
    assert _measured_means(convs, [*measured[:5], other, *measured[6:]]) is None  # another channel count
    renamed = [replace(m, name=m.name.replace("/Conv1", "/Conv9")) for m in measured]
    assert _measured_means(convs, renamed) is None


def test_worker_measures_in_its_own_process_and_reports_a_failure(mobilenet, tmp_path):
    from trainer.export.input_means import MeansSpec, MeansWorker, conv_input_means

    _, _, content = mobilenet
    (tmp_path / "backbone.tflite").write_bytes(content)
    paths = []
    for i, image in enumerate(_images(3)):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    with MeansWorker(MeansSpec(tmp_path / "backbone.tflite", tuple(paths), (SIZE, SIZE), "center_crop")) as worker:
        means = worker.result()
    assert means is not None and worker.failure is None
    here = conv_input_means(content, _images(3))
    assert [m.name for m in means] == [m.name for m in here]
    assert all(np.array_equal(a.mean, b.mean) for a, b in zip(means, here))

    # the worker's process needs no TensorFlow: with it blocked, the same means
    import pickle
    import subprocess
    import sys

    from tledge_paths import ROOT

    spec = tmp_path / "spec.pickle"
    spec.write_bytes(pickle.dumps(MeansSpec(tmp_path / "backbone.tflite", tuple(paths), (SIZE, SIZE), "center_crop")))
    blocked = subprocess.run([sys.executable, "-c", BLOCK_TF, str(spec), str(tmp_path / "out.pickle")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert blocked.returncode == 0, blocked.stderr
    assert all(np.array_equal(a.mean, b.mean) for a, b in zip(pickle.loads((tmp_path / "out.pickle").read_bytes()), here))

    (tmp_path / "broken.tflite").write_bytes(b"not a model")
    with MeansWorker(MeansSpec(tmp_path / "broken.tflite", tuple(paths), (SIZE, SIZE), "center_crop")) as worker:
        assert worker.result() is None
    assert worker.failure  # the last line the worker wrote on stderr


def test_export_measures_the_means_on_the_runs_backbone_file_else_through_keras(synthetic_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("TLEDGE_CACHE", str(tmp_path / "cache"))
    run_dir = Path(cli_tiny_train(synthetic_dataset, tmp_path / "runs", "tflite")["run_dir"])
    where = json.loads((run_dir / "run.json").read_text())["feature_cache"]
    backbone = tmp_path / "cache" / "backbones" / f"{where['key']}.tflite"
    assert backbone.is_file()

    def export(out: str) -> dict:
        return cli_int8_export(run_dir, tmp_path / out)

    from_file = export("bundle-a")
    assert from_file["bias_correction_means"] == "tflite"
    shutil.move(backbone, tmp_path / "elsewhere.tflite")
    through_keras = export("bundle-b")
    assert through_keras["bias_correction_means"] == "keras"
    # the same statistics to float rounding: the two files answer alike
    for split in ("val", "test"):
        a, b = from_file["splits"][split], through_keras["splits"][split]
        assert abs(a["tflite_accuracy"] - b["tflite_accuracy"]) <= 1 / a["images"] + 1e-9
    backbone.write_bytes(b"damaged")  # the worker fails: the Keras pass measures, the export goes on
    assert export("bundle-c")["bias_correction_means"] == "keras"
