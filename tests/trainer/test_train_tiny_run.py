"""The `tiny_run` fixture honours the run-directory contract the exporter reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def test_tiny_run_follows_the_run_directory_contract(tiny_run: Path) -> None:
    names = {p.name for p in tiny_run.iterdir()}
    assert {"model.keras", "labels.txt", "run.json", "splits.json", "metrics.json", "history.csv", "data_report.json", "summary.json"} <= names
    assert "learning_curves.png" in names and "confusion_val.png" in names
    run = json.loads((tiny_run / "run.json").read_text())
    assert run["labels"] == ["circle", "square", "stripes", "triangle"]
    assert (tiny_run / "labels.txt").read_text(encoding="utf-8").splitlines() == run["labels"]
    assert run["image_size"] == [48, 48] and run["resize"] == "center_crop"
    assert run["backbone"] == {"name": "mobilenet_v2", "alpha": 0.35, "weights": "none"}
    for key in ("tledge_version", "name", "data_dir", "options", "created_utc", "seed"):
        assert key in run
    splits = json.loads((tiny_run / "splits.json").read_text())
    assert [len(splits[s]) for s in ("train", "val", "test")] == [80, 8, 8]
    assert splits["format"] == 2 and splits["data_root"] == run["data_dir"]
    path, label = splits["val"][0]
    assert not Path(path).is_absolute() and (Path(splits["data_root"]) / path).is_file() and 0 <= label < 4
    assert not list(tiny_run.parent.glob(".*partial"))


def test_tiny_run_model_takes_raw_pixels_and_outputs_softmax(tiny_run: Path) -> None:
    import keras

    model = keras.saving.load_model(tiny_run / "model.keras", compile=False)
    assert tuple(model.input_shape) == (None, 48, 48, 3)
    assert tuple(model.output_shape) == (None, 4)
    probs = model(np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 3)).astype("float32")).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
