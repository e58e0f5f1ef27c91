"""Decision thresholds chosen at export, on the exported file's own scores (issue 14)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from edge.bundle import load_model_info
from edge.classifier import Classifier
from edge.decision import UNKNOWN_LABEL, DecisionPolicy
from edge.images import load_rgb


def test_int8_bundle_carries_thresholds_that_hold_on_its_own_scores(export_once, trained_run: Path, tmp_path: Path) -> None:
    result = export_once("int8")
    labels = json.loads((trained_run / "run.json").read_text())["labels"]
    entry = result.manifest["thresholds"]
    assert set(entry["classes"]) == set(labels) and entry["target_precision"] == 0.95
    section = result.report["thresholds"]
    assert section["classes"] == entry["classes"] and {"val", "test"} <= set(section["splits"])
    for split in section["splits"].values():
        assert 0.0 <= split["coverage"] <= 1.0 and set(split["per_class"]) == set(labels)

    # The same thresholds are embedded in the .tflite itself (a bare copy, no manifest beside it).
    bare = tmp_path / "bare.tflite"
    shutil.copyfile(result.model_path, bare)
    embedded = load_model_info(bare).manifest["thresholds"]
    assert embedded == entry

    # Run the exported file with the device's code over the images the thresholds were
    # chosen on: every class it decides reaches the target precision there.
    splits = json.loads((trained_run / "splits.json").read_text())
    items = splits["val"] + splits["test"] if entry["method"] == "kfold" else splits["val"]
    info = load_model_info(result.bundle_dir)
    clf, policy = Classifier(info), DecisionPolicy.for_model(info.labels, info.manifest)
    said, truth = [], []
    for path, label in items:
        prediction = clf.classify(load_rgb(path), top_k=1)
        said.append(policy.decide(prediction.index, prediction.score))
        truth.append(labels[label])
    said_a, truth_a = np.array(said), np.array(truth)
    for label in labels:
        mask = said_a == label
        if mask.any():
            assert np.mean(truth_a[mask] == label) >= 0.95, label
    assert set(said) <= set(labels) | {UNKNOWN_LABEL}


def test_thresholds_none_stores_none_and_the_report_says_so(tiny_run: Path, tmp_path: Path) -> None:
    from edge.cli import app

    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(out), "--thresholds", "none", "--accept-drop"])
    assert result.exit_code == 0, result.output
    assert "decision thresholds: none" in result.stdout
    assert "thresholds" not in json.loads((out / "manifest.json").read_text())
    assert json.loads((out / "report.json").read_text())["thresholds"] is None
