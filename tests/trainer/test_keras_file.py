"""model.keras written from a template with another head (trainer.keras_file) is the file
Keras would have saved: it loads in Keras with every weight equal, and answers alike."""

from __future__ import annotations

import dataclasses
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from trainer.config import ModelOptions, WeightsKind, WeightsSpec
from trainer.head import DenseHead
from trainer.keras_file import KerasFileError, read_head, write_with_head

keras = pytest.importorskip("keras")

OPTIONS = ModelOptions(alpha=0.35, image_size=32, weights=WeightsSpec(WeightsKind.NONE))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny classifier (3 classes, dropout 0.2) saved by Keras: the template."""
    from trainer import model as model_lib

    keras.utils.clear_session()  # layer names as a fresh process numbers them
    keras.utils.set_random_seed(4)
    classifier = model_lib.build_classifier(model_lib.build_backbone(OPTIONS), OPTIONS, 3)
    path = tmp_path_factory.mktemp("template") / "model.keras"
    classifier.save(path)
    return path


def _head(seed: int, classes: int = 3) -> DenseHead:
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 1, (1280, classes)).astype(np.float32)  # MobileNetV2 pools 1280 features at alpha <= 1
    return DenseHead(kernel, rng.normal(0, 1, classes).astype(np.float32))


def _config(path: Path) -> dict:
    """config.json without the ids Keras numbers shared objects with (they differ per save)."""
    text = json.dumps(json.loads(zipfile.ZipFile(path).read("config.json")))
    return json.loads(re.sub(r', "shared_object_id": \d+', "", text))


@pytest.mark.parametrize("classes, dropout", [(3, 0.2), (5, 0.5)])  # the template's own shape, and another
def test_a_file_from_the_template_is_keras_own_save_with_the_new_head(template: Path, tmp_path: Path, classes: int, dropout: float) -> None:
    from trainer import model as model_lib

    head = _head(1, classes)
    written = tmp_path / "from_template.keras"
    write_with_head(template, head, dropout, written)

    keras.utils.clear_session()  # the same layer names ...
    keras.utils.set_random_seed(4)  # ... and backbone weights as the template's
    options = dataclasses.replace(OPTIONS, dropout=dropout)
    classifier = model_lib.build_classifier(model_lib.build_backbone(options), options, classes)
    model_lib.copy_head(head, classifier)  # what train() does on the Keras path ...
    expected = tmp_path / "by_keras.keras"
    classifier.save(expected)  # ... and saves

    assert _config(written) == _config(expected)
    loaded, reference = (keras.models.load_model(p, compile=False) for p in (written, expected))
    for got, want in zip(loaded.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert loaded.get_layer("dropout").rate == dropout
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(pixels, verbose=0), reference.predict(pixels, verbose=0))
    again = read_head(written, classes)
    np.testing.assert_array_equal(again.kernel, head.kernel)
    np.testing.assert_array_equal(again.bias, head.bias)
    assert read_head(template, 3).kernel.shape == (1280, 3)  # the template itself is untouched


def test_a_template_that_does_not_fit_is_refused(template: Path, tmp_path: Path) -> None:
    narrow = DenseHead(np.zeros((640, 2), np.float32), np.zeros(2, np.float32))  # another backbone's features
    with pytest.raises(KerasFileError, match="takes 1280 features, the head 640"):
        write_with_head(template, narrow, 0.2, tmp_path / "x.keras")
    broken = tmp_path / "broken.keras"
    broken.write_bytes(template.read_bytes()[:1000])
    with pytest.raises(KerasFileError, match="cannot read"):
        write_with_head(broken, _head(2), 0.2, tmp_path / "y.keras")
    garbled = tmp_path / "garbled.keras"
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(garbled, "w") as target:
        for name in source.namelist():
            target.writestr(name, b"{not json" if name == "config.json" else source.read(name))
    with pytest.raises(KerasFileError, match="cannot read garbled.keras"):
        write_with_head(garbled, _head(2), 0.2, tmp_path / "z.keras")
    assert not any((tmp_path / name).exists() for name in ("x.keras", "y.keras", "z.keras"))
