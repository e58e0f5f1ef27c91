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
    assert summary["test_images"] == len(test_images)

    # The printed summary names the random backbone and shows paths from where it ran.
    lines = summary_lines(summary, cwd=tmp_path)
    assert lines[1] == "  backbone        RANDOM backbone - no ImageNet weights could be had; accuracy is not representative"
    assert "  bundle          demo/bundle" in lines
    # every accuracy line carries its n and a 95 % interval (16 test images, 120 frames)
    assert "n=16)" in lines[3] and lines[3].count("%, n=16)") == 2
    assert lines[4].startswith("  top-1 agreement ") and "n=16)" in lines[4]
    assert "n=120)" in next(line for line in lines if line.startswith("  video"))
    assert any(line.startswith("  training run    demo/runs/demo-") for line in lines)


def test_summary_paths_are_relative_below_or_beside_the_current_directory(tmp_path: Path) -> None:
    here = tmp_path / "repo"
    assert shown_path(here / "runs" / "demo" / "bundle", cwd=here) == "runs/demo/bundle"
    assert shown_path(tmp_path / "shared" / "w.h5", cwd=here) == "../shared/w.h5"
    assert shown_path("/elsewhere/w.h5", cwd=here) == "/elsewhere/w.h5"
    assert shown_path(Path("/w.h5"), cwd=Path("/repo")) == "/w.h5"  # never ../ up to the root


def test_summary_accuracy_lines_carry_wilson_intervals() -> None:
    summary = {
        "weights": "none", "random_backbone": False, "classes": ["a", "b"], "train_wall_s": 1.0,
        "float_test_accuracy": 1.0, "int8_test_accuracy": 0.9375, "top1_agreement": 0.9375, "test_images": 16,
        "int8_size_kb": 10.0, "latency_p50_ms": 1.0, "video_frames": 120, "video_accuracy": 0.5, "video_correct": 60,
        "video_fps": 30.0, "bundle": "/b", "run_dir": "/r", "total_wall_s": 2.0,
    }
    lines = summary_lines(summary, cwd=Path("/"))
    # Wilson 95 %: 16/16 -> 80.6-100 %, 15/16 -> 71.7-98.9 %, 60/120 -> 41.2-58.8 %
    assert lines[3] == "  test accuracy   float 100.0 % (80.6-100.0 %, n=16)   int8 93.8 % (71.7-98.9 %, n=16)"
    assert lines[4] == "  top-1 agreement 93.8 % (71.7-98.9 %, n=16) (int8 vs float, test)"
    assert lines[6] == "  video           50.0 % (41.2-58.8 %, n=120) of frames correct, 30.0 fps"
