"""A tiny real training run in the layout `tledge train` writes, for the exporter tests.

Rescaling + MobileNetV2(alpha=0.35, weights=None) + softmax head, trained for a few
epochs on procedural shapes (trainer.synthetic), saved as RUN_DIR/model.keras with
labels.txt, run.json and splits.json. Small enough for 2 shared CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import cv2

from trainer.synthetic import CLASSES, draw

SIZE = 48  # pixels, model input height = width
SPLITS = {"train": 24, "val": 6, "test": 6}  # images per class

#: Non-ASCII, spaces, punctuation, 11 classes: what labels.txt must carry exactly.
UNICODE_LABELS = (
    "café", "Ölfaß", "naïve t-shirt", "日本語", "Ελληνικά", "emoji 👕", "a,b;c", "with  two spaces",
    "ß", "Ünïcödé", "zürich/wear",
)


def build_model(num_classes: int, size: int = SIZE, seed: int = 0):
    """Raw-pixel-input classifier: scaling to [-1, 1] inside the graph, as the trainer does."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    backbone = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
    )
    x = backbone(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # A few dozen steps from scratch: let the moving statistics catch up, so
            # inference mode (what gets exported) behaves like training mode.
            layer.momentum = 0.5
    return keras.Model(inputs, outputs)


def write_images(data: Path, num_classes: int, size: int, splits: dict[str, int], seed: int = 0) -> dict[str, list[list]]:
    """PNG files data/<split>/c<i>/; class i shows synthetic kind i mod 4. Returns splits.json."""
    rng = np.random.default_rng(seed)
    items: dict[str, list[list]] = {}
    for split, count in splits.items():
        items[split] = []
        for index in range(num_classes):
            folder = data / split / f"c{index:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                path = folder / f"{k:03d}.png"
                rgb = draw(CLASSES[index % len(CLASSES)], size, rng)
                cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                items[split].append([str(path.resolve()), index])
    return items


def make_tiny_run(
    root: Path,
    labels: tuple[str, ...] = CLASSES,
    epochs: int = 4,
    size: int = SIZE,
    splits: dict[str, int] | None = None,
    name: str = "tiny",
) -> Path:
    """Write data and a trained run directory under `root`; return the run directory.

    With more labels than synthetic kinds, the kinds repeat (class i draws kind i mod 4):
    enough for tests of the label plumbing, where accuracy does not matter. Labels need
    not be folder names: the run's splits.json maps files to class indices.
    """
    import keras

    split_items = write_images(root / "data", len(labels), size, splits or SPLITS)

    model = build_model(len(labels), size)
    train = split_items["train"]
    if epochs:
        from edge.images import load_rgb

        x = np.stack([load_rgb(p).astype(np.float32) for p, _ in train])
        y = np.array([c for _, c in train])
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, shuffle=True)

    run = root / "run"
    run.mkdir(parents=True)
    model.save(run / "model.keras")
    (run / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    info = {
        "tledge_version": "0.1.0",
        "name": name,
        "data_dir": str(root / "data"),
        "labels": list(labels),
        "image_size": [size, size],
        "resize": "center_crop",
        "backbone": {"name": "mobilenet_v2", "alpha": 0.35, "weights": None},
        "options": {"epochs": epochs},
        "created_utc": "2026-01-01T00:00:00Z",
        "seed": 0,
    }
    (run / "run.json").write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
    (run / "splits.json").write_text(json.dumps(split_items), encoding="utf-8")
    return run


def train_on_clothing(shared: Path, weights: Path, out_dir: Path, name: str, subset: int, image_size: int, cache_dir: Path | None = None):
    """A real run: the ImageNet backbone at `weights` and a head trained on `subset` images per
    class and split of ../shared's clothing-small (seed 0, no augmentation; memory cache, or
    with `cache_dir` a disk cache there and the TFLite feature engine, so that run.json names
    the cache and its converted backbone). Skips the test when the dataset is absent."""
    import pytest

    from trainer.config import CacheMode, DataOptions, FeatureEngine, HyperParams, ModelOptions, RuntimeOptions, TrainOptions, WeightsKind, WeightsSpec
    from trainer.train import train

    data = shared / "datasets" / "clothing-small"
    if not data.is_dir():
        pytest.skip(f"{data} is absent")
    return train(
        TrainOptions(
            data=DataOptions(data, subset=subset),
            model=ModelOptions(image_size=image_size, weights=WeightsSpec(WeightsKind.FILE, weights)),
            hyper=HyperParams(augment_views=0),
            runtime=RuntimeOptions(cache=CacheMode.MEMORY, quiet=True) if cache_dir is None
            else RuntimeOptions(engine=FeatureEngine.TFLITE, cache=CacheMode.DISK, cache_dir=cache_dir, quiet=True),
            out_dir=out_dir,
            name=name,
            seed=0,
        )
    )


def cli_tiny_train(dataset: Path, runs: Path, engine: str) -> dict:
    """`tledge train --json` of a tiny model (alpha 0.35, 48 px, random weights, 2 epochs)
    on `dataset` with feature engine `engine`, through the CLI; its JSON summary. The
    cache is the caller's $TLEDGE_CACHE."""
    from typer.testing import CliRunner

    from edge.cli import app

    result = CliRunner().invoke(app, ["train", str(dataset), "--out", str(runs), "--alpha", "0.35", "--image-size", "48",
                                      "--weights", "none", "--epochs", "2", "--engine", engine, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def cli_int8_export(run_dir: Path, out: Path) -> dict:
    """`tledge export RUN --quantize --json` (40 calibration images, drop accepted) through
    the CLI; its JSON report."""
    from typer.testing import CliRunner

    from edge.cli import app

    result = CliRunner().invoke(app, ["export", str(run_dir), "--quantize", "--calibration-images", "40", "--out", str(out), "--accept-drop", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])
