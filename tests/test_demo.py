"""The README's main job, end to end, through the real CLI (tiny settings)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edge.cli import app


@pytest.mark.slow
def test_demo_end_to_end_says_when_the_backbone_is_random(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TLEDGE_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(
        app, ["demo", "--work-dir", str(tmp_path / "demo"), "--weights", "none", "--images-per-class", "12", "--quiet", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["random_backbone"] is True
    assert summary["classes"] == ["circle", "square", "stripes", "triangle"]
    assert summary["video_frames"] == 120
    assert (tmp_path / "demo" / "bundle" / "model.tflite").is_file()
    assert (tmp_path / "demo" / "bundle" / "manifest.json").is_file()
    for key in ("float_test_accuracy", "int8_test_accuracy", "top1_agreement"):
        assert 0.0 <= summary[key] <= 1.0
