"""The faster export path (issue 13): images decoded once in the background, calibration
from decoded arrays, the float side from the training run's features + head, and
`tledge train --export` as one command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from export_helpers import cli_int8_export, cli_tiny_train

from edge.images import load_rgb
from edge.preprocess import resize_rgb
from trainer.errors import ExportError
from trainer.export.convert import representative_images
from trainer.export.decoding import BackgroundDecoder


def _photos(folder: Path, count: int, size: tuple[int, int] = (60, 40)) -> list[str]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def test_background_decoder_gives_the_devices_pixels_in_order(tmp_path):
    paths = _photos(tmp_path, 5)
    with BackgroundDecoder((32, 32), "center_crop", threads=2) as decoder:
        decoder.submit("val", paths, "Verification")
        decoder.submit("empty", [], "Verification")
        images = decoder.images("val")
        assert decoder.images("empty").shape == (0, 32, 32, 3)
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    for path, image in zip(paths, images):
        np.testing.assert_array_equal(image, resize_rgb(load_rgb(path), (32, 32), "center_crop"))
    # the device's preprocessing of a model-size image is the identity resize
    np.testing.assert_array_equal(resize_rgb(images[0], (32, 32), "center_crop"), images[0])


def test_background_decoder_names_an_unusable_image(tmp_path):
    paths = _photos(tmp_path, 2)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with BackgroundDecoder((32, 32), "stretch") as decoder:
        decoder.submit("calibration", [*paths, str(broken)], "Calibration")
        with pytest.raises(ExportError, match=r"Calibration image unusable: .*broken\.jpg"):
            decoder.images("calibration")


def test_representative_images_pins_the_input_range_and_feeds_batches_of_one():
    images = np.full((3, 8, 8, 3), 100, np.uint8)
    samples = [s[0] for s in representative_images(images)()]
    assert [s.shape for s in samples] == [(1, 8, 8, 3)] * 3 and samples[0].dtype == np.float32
    assert samples[0][0, 0, 0].tolist() == [0.0] * 3 and samples[0][0, 0, 1].tolist() == [255.0] * 3
    assert float(samples[1].min()) == 100.0  # only the first sample is marked
    with pytest.raises(ExportError, match="No calibration images"):
        representative_images(np.zeros((0, 8, 8, 3), np.uint8))


def test_float_side_from_features_matches_the_keras_head():
    import keras

    from trainer.export.float_side import dense_weights, head_float_top
    from trainer.model import OUTPUT_NAME

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name=OUTPUT_NAME)(inputs))
    rng = np.random.default_rng(1)
    splits = {"val": [(f"v{i}.jpg", 0) for i in range(7)], "test": [("t0.jpg", 1)]}
    vectors = {path: rng.normal(size=6).astype(np.float32) for items in splits.values() for path, _ in items}
    top = head_float_top(dense_weights(model), vectors, splits)
    assert top is not None
    x = np.stack([vectors[p] for p, _ in splits["val"]])
    np.testing.assert_array_equal(top("val", np.zeros((7, 4, 4, 3), np.uint8)), model.predict(x, verbose=0).argmax(axis=1))
    with pytest.raises(ExportError, match="feature rows"):
        top("val", np.zeros((2, 4, 4, 3), np.uint8))
    # an image without features: the exporter falls back to running the Keras model
    assert head_float_top(dense_weights(model), {k: v for k, v in vectors.items() if k != "t0.jpg"}, splits) is None


@pytest.mark.parametrize("calibrator", [None, "litert"])
def test_train_export_is_one_command_and_verifies_from_the_features(synthetic_dataset, tmp_path, calibrator):
    from edge.cli import app

    runner = CliRunner()
    args = ["train", str(synthetic_dataset), "--out", str(tmp_path / "runs"), "--alpha", "0.35", "--image-size", "48",
            "--weights", "none", "--epochs", "2", "--cache", "memory", "--engine", "keras", "--json",
            "--export", "--quantize", "--calibration-images", "40", "--bundle-out", str(tmp_path / "bundle"), "--accept-drop"]
    if calibrator:
        args += ["--calibrator", calibrator]
    result = runner.invoke(app, args, env={"TLEDGE_CALIBRATOR": ""})
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(out["run"]["run_dir"]).is_dir() and out["export"]["bundle"] == str(tmp_path / "bundle")
    report = out["export"]
    assert report["quantization"] == "int8" and report["calibration_images"] == 40
    assert report["float_side"] == "features+head"
    assert report["calibrator"] == (calibrator or "tensorflow")
    # the float side from features + head gives the training run's own val accuracy
    assert report["splits"]["val"]["float_accuracy"] == pytest.approx(out["run"]["val_accuracy"])
    assert {p.name for p in (tmp_path / "bundle").iterdir()} >= {"model.tflite", "labels.txt", "manifest.json", "report.json"}


def test_an_unknown_calibrator_stops_train_export_before_training(synthetic_dataset, tmp_path):
    from edge.cli import app

    args = ["train", str(synthetic_dataset), "--out", str(tmp_path / "runs"), "--export", "--quantize"]
    result = CliRunner().invoke(app, args, env={"TLEDGE_CALIBRATOR": "xnnpack"})
    assert result.exit_code == 2
    assert "xnnpack" in result.output and "TLEDGE_CALIBRATOR" in result.output
    assert not (tmp_path / "runs").exists()


def test_export_flags_without_export_are_a_usage_error(synthetic_dataset, tmp_path):
    from edge.cli import app

    result = CliRunner().invoke(app, ["train", str(synthetic_dataset), "--out", str(tmp_path), "--quantize"])
    assert result.exit_code == 2
    assert "--export" in result.output and not (tmp_path).joinpath("runs").exists()


def test_standalone_export_verifies_from_the_runs_cached_features(synthetic_dataset, tmp_path, monkeypatch):
    """run.json names the disk feature cache; `tledge export` answers the float side
    from it (the run's own val accuracy), and from Keras once the cache is gone."""
    import shutil

    monkeypatch.setenv("TLEDGE_CACHE", str(tmp_path / "cache"))
    run = cli_tiny_train(synthetic_dataset, tmp_path / "runs", "keras")
    run_dir = Path(run["run_dir"])
    where = json.loads((run_dir / "run.json").read_text())["feature_cache"]
    assert Path(where["root"]) == (tmp_path / "cache").resolve() and (tmp_path / "cache" / "features" / where["key"]).is_dir()

    def export(out: str) -> dict:
        return cli_int8_export(run_dir, tmp_path / out)

    cached = export("bundle-a")
    assert cached["float_side"] == "features+head"
    assert cached["splits"]["val"]["float_accuracy"] == pytest.approx(run["val_accuracy"])
    shutil.rmtree(tmp_path / "cache" / "features")
    assert export("bundle-b")["float_side"] == "keras"
