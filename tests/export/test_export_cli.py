"""`tledge export` end to end through the real CLI (Typer's CliRunner)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.cli import app


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def _json_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_quantize_alone_gives_int8_with_uint8_pixel_input(runner, tiny_run, tmp_path):
    """On the trainer's own run directory: the shared contract between the two halves."""
    from trainer.export.tflite_inspect import inspect_tflite

    out = tmp_path / "bundle"
    result = runner.invoke(app, ["export", str(tiny_run), "--quantize", "--calibration-images", "20", "--calibrator", "litert",
                                 "--out", str(out), "--accept-drop", "--json"])
    assert result.exit_code == 0, result.output
    report = _json_line(result.stdout)
    assert report["quantization"] == "int8" and report["io"] == "uint8" and report["bundle"] == str(out)
    assert report["calibrator"] == "litert"  # as asked (the default is tensorflow), and no fallback note
    assert report["calibrator_shards"] is None  # shards are TensorFlow's calibrator's
    assert not any("TensorFlow's calibrator" in w for w in report["warnings"])
    # Fewer than 32 calibration images: flagged, on stderr and in the report.
    assert "fewer than 32" in result.stderr and any("fewer than 32" in w for w in report["warnings"])
    summary = inspect_tflite((out / "model.tflite").read_bytes())
    assert summary.inputs[0].dtype == "UINT8" and (summary.inputs[0].scale, summary.inputs[0].zero_point) == (1.0, 0)
    assert summary.outputs[0].dtype == "UINT8" and not summary.custom_ops
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["splits"] == report["splits"]

    again = runner.invoke(app, ["export", str(tiny_run), "--quantize", "--out", str(out)])
    assert again.exit_code == 1 and "--force" in again.stderr and "Traceback" not in again.output


def test_help_documents_the_modes(runner):
    result = runner.invoke(app, ["export", "--help"])
    assert result.exit_code == 0
    for word in ("--quantize", "--mode", "float16", "dynamic", "--io", "--max-drop", "--accept-drop", "--force", "--calibrator"):
        assert word in result.stdout


@pytest.mark.parametrize(
    "args",
    [["--quantize", "--mode", "float32"], ["--mode", "float16", "--io", "int8"], ["--io", "int8"], ["--mode", "int4"]],
)
def test_contradicting_flags_are_usage_errors(runner, tmp_path, args):
    result = runner.invoke(app, ["export", str(tmp_path), *args])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_the_default_calibrator_records_its_shards(runner, tiny_run, tmp_path):
    """TensorFlow's calibrator, on 2 shards of the 20 images (the single pass's exact ranges)."""
    out = tmp_path / "bundle"
    result = runner.invoke(app, ["export", str(tiny_run), "--quantize", "--calibration-images", "20", "--out", str(out),
                                 "--accept-drop", "--json"], env={"TLEDGE_CALIBRATION_SHARDS": "2", "TLEDGE_CALIBRATOR": ""})
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert (report["calibrator"], report["calibrator_shards"]) == ("tensorflow", 2)
    assert not any("calibrator" in w for w in report["warnings"])


def test_an_unknown_calibrator_in_the_environment_is_a_clear_error(runner, tiny_run, tmp_path):
    result = runner.invoke(app, ["export", str(tiny_run), "--quantize", "--out", str(tmp_path / "b")], env={"TLEDGE_CALIBRATOR": "xnnpack"})
    assert result.exit_code == 1 and "litert, tensorflow" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "b").exists()


def test_a_folder_that_is_no_run_is_a_clear_error(runner, tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 1
    assert "run.json is missing" in result.stderr and "tledge train" in result.stderr


@pytest.fixture(scope="module")
def miscalibrated_run(trained_run, tmp_path_factory) -> Path:
    """The trained run, but its training split (the calibration source) is all-black frames:
    int8 ranges fitted to darkness clip every real image's activations."""
    run = tmp_path_factory.mktemp("miscalibrated") / "run"
    shutil.copytree(trained_run, run)
    black = []
    for i in range(24):
        path = run.parent / f"black_{i}.png"
        cv2.imwrite(str(path), np.zeros((48, 48, 3), np.uint8))
        black.append([str(path), i % 4])
    splits = json.loads((run / "splits.json").read_text())
    (run / "splits.json").write_text(json.dumps({**splits, "train": black}))
    return run


def test_accuracy_drop_fails_the_export_and_names_classes(runner, miscalibrated_run, tmp_path):
    out = tmp_path / "bundle"
    result = runner.invoke(app, ["export", str(miscalibrated_run), "--quantize", "--out", str(out), "--max-drop", "2"])
    assert result.exit_code == 1, result.output
    assert "accuracy points" in result.stderr and "Classes that suffered most" in result.stderr
    assert "--accept-drop" in result.stderr
    assert "Verification" in result.stdout and "FAILED" in result.stdout  # the table is still shown
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing written

    accepted = runner.invoke(
        app, ["export", str(miscalibrated_run), "--quantize", "--out", str(out), "--accept-drop", "--json"]
    )
    assert accepted.exit_code == 0, accepted.output
    report = _json_line(accepted.stdout)
    assert report["accepted_drop"] is True and report["passed"] is False and report["drop_points"] > 2
    assert report["suffered"] and set(report["suffered"]) <= {"circle", "square", "triangle", "stripes"}
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["metrics"]["tflite_test_accuracy"] == report["splits"]["test"]["tflite_accuracy"]
