"""model.keras written from a template with another head (trainer.keras_file) is the file
Keras would have saved: it loads in Keras with every weight equal, and answers alike."""

from __future__ import annotations

import json
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
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A tiny classifier saved by Keras (the template) and the classifier itself."""
    from trainer import model as model_lib

    keras.utils.set_random_seed(4)
    classifier = model_lib.build_classifier(model_lib.build_backbone(OPTIONS), OPTIONS, 3)
    path = tmp_path_factory.mktemp("template") / "model.keras"
    classifier.save(path)
    return path, classifier


def _head(seed: int, classes: int = 3) -> DenseHead:
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 1, (1280, classes)).astype(np.float32)  # MobileNetV2 pools 1280 features at alpha <= 1
    return DenseHead(kernel, rng.normal(0, 1, classes).astype(np.float32))


def test_a_file_from_the_template_is_keras_own_save_with_the_new_head(saved, tmp_path: Path) -> None:
    from trainer import model as model_lib

    template, classifier = saved
    head = _head(1)
    written = tmp_path / "from_template.keras"
    write_with_head(template, head, written)

    model_lib.copy_head(head, classifier)  # what train() does on the Keras path ...
    expected = tmp_path / "by_keras.keras"
    classifier.save(expected)  # ... and saves

    loaded, reference = (keras.models.load_model(p, compile=False) for p in (written, expected))
    assert json.loads(zipfile.ZipFile(written).read("config.json")) == json.loads(zipfile.ZipFile(expected).read("config.json"))
    for got, want in zip(loaded.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(pixels, verbose=0), reference.predict(pixels, verbose=0))
    again = read_head(written, 3)
    np.testing.assert_array_equal(again.kernel, head.kernel)
    np.testing.assert_array_equal(again.bias, head.bias)
    assert read_head(template, 3).kernel.shape == head.kernel.shape  # the template itself is untouched ...
    assert not np.array_equal(read_head(template, 3).kernel, head.kernel)


def test_a_template_that_does_not_fit_is_refused(saved, tmp_path: Path) -> None:
    template, _ = saved
    with pytest.raises(KerasFileError, match="3 units for 4 classes"):
        write_with_head(template, _head(2, classes=4), tmp_path / "x.keras")
    broken = tmp_path / "broken.keras"
    broken.write_bytes(template.read_bytes()[:1000])
    with pytest.raises(KerasFileError, match="cannot read"):
        write_with_head(broken, _head(2), tmp_path / "y.keras")
    assert not (tmp_path / "y.keras").exists()
