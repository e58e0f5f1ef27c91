"""The README's main job, end to end, through the real CLI (tiny settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app
from trainer.demo import shown_path, summary_lines


@pytest.mark.slow
def test_demo_end_to_end_says_when_the_backbone_is_random(tmp_path, monkeypatch) -> None:
    from edge.bundle import load_model_info
    from edge.classifier import Classifier
    from edge.images import load_rgb

    monkeypatch.setenv("TLEDGE_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(
        app, ["demo", "--work-dir", str(tmp_path / "demo"), "--weights", "none", "--images-per-class", "12", "--quiet", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["random_backbone"] is True
    assert summary["classes"] == ["circle", "square", "stripes", "triangle"]
    assert summary["video_frames"] == 120
    bundle = tmp_path / "demo" / "bundle"
    assert summary["bundle"] == str(bundle.resolve()) and (bundle / "manifest.json").is_file()

    # The int8 test accuracy it reports is what the edge runtime gets on the demo's own
    # test images, recomputed here image by image from the bundle.
    classifier = Classifier(load_model_info(bundle))
    test_images = sorted((tmp_path / "demo" / "data" / "test").glob("*/*.png"))
    assert len(test_images) == 4 * 4  # max(4, 12 // 4) per class
    hits = [classifier.classify(load_rgb(path)).label == path.parent.name for path in test_images]
    assert summary["int8_test_accuracy"] == pytest.approx(sum(hits) / len(hits))

    # The printed summary names the random backbone and shows paths from where it ran.
    lines = summary_lines(summary, cwd=tmp_path)
    assert lines[1] == "  backbone        RANDOM backbone - no ImageNet weights could be had; accuracy is not representative"
    assert "  bundle          demo/bundle" in lines
    assert any(line.startswith("  training run    demo/runs/demo-") for line in lines)


def test_summary_paths_are_relative_below_or_beside_the_current_directory(tmp_path: Path) -> None:
    here = tmp_path / "repo"
    assert shown_path(here / "runs" / "demo" / "bundle", cwd=here) == "runs/demo/bundle"
    assert shown_path(tmp_path / "shared" / "w.h5", cwd=here) == "../shared/w.h5"
    assert shown_path("/elsewhere/w.h5", cwd=here) == "/elsewhere/w.h5"
    assert shown_path(Path("/w.h5"), cwd=Path("/repo")) == "/w.h5"  # never ../ up to the root
