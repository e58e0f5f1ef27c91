"""Learning from the field: frames filed from the inbox join the dataset, and retraining
computes backbone features for the new images only (the cache is keyed by content)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from inbox_helpers import fill_inbox
from typer.testing import CliRunner

from edge.cli import app
from trainer.synthetic import CLASSES, draw, make_dataset

runner = CliRunner()


def train(data: Path, runs: Path, cache: Path) -> dict:
    result = runner.invoke(
        app,
        ["train", str(data), "--out", str(runs), "--weights", "none", "--alpha", "0.35", "--image-size", "32", "--epochs", "1",
         "--augment-views", "0", "--engine", "keras", "--cache", "disk", "--val-split", "0.2", "--test-split", "0.2", "--json"],
        env={"TLEDGE_CACHE": str(cache)},
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    summary["metrics_features"] = json.loads((Path(summary["run_dir"]) / "metrics.json").read_text())["features"]
    return summary


def test_retraining_on_the_grown_folder_computes_only_the_new_images(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", per_class=6, size=48, seed=0)
    old = sum(1 for _ in data.rglob("*.png"))
    runs, cache = tmp_path / "runs", tmp_path / "cache"

    first = train(data, runs, cache)
    assert (first["features"]["views_computed"], first["features"]["views_cached"]) == (old, 0)

    # The field loop: uncertain frames saved by a run, filed by `tledge label`, then retrain.
    rng = np.random.default_rng(7)
    tops = [CLASSES[i % len(CLASSES)] for i in range(5)]
    fill_inbox(tmp_path / "inbox", tops, labels=tuple(CLASSES), images=[draw(name, 32, rng) for name in tops])
    filed = runner.invoke(app, ["label", str(tmp_path / "inbox"), "--to", str(data), "--accept-top"])
    assert filed.exit_code == 0 and "filed 5" in filed.stderr, filed.output
    assert sum(1 for _ in data.rglob("*.jpg")) == 5

    grown = train(data, runs, cache)
    assert sum(grown["images"].values()) == old + 5
    assert (grown["features"]["views_computed"], grown["features"]["views_cached"]) == (5, old)
    assert grown["metrics_features"]["images_decoded"] == 5  # the old images were not even decoded
