"""The bookkeeping of scripts/bench_photos_to_bundle.py and scripts/timed_cli.py: stages
from progress-line times, the stand-in dataset's layout, and the tables it renders (no
TensorFlow, no timing)."""

from __future__ import annotations

import sys

import pytest

from tledge_paths import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

import bench_photos_to_bundle as bench  # noqa: E402
import timed_cli  # noqa: E402


def test_export_stages_are_the_gaps_between_progress_lines() -> None:
    marks = {"converting": 6.0, "verifying": 20.5, "bundle written": 24.0}
    assert timed_cli.export_stages(marks, 25.0) == {"start_to_converting_s": 6.0, "conversion_s": 14.5, "verification_s": 3.5, "write_and_exit_s": 1.0}
    # a line that never came leaves its two neighbouring stages unknown, not wrong
    missing = timed_cli.export_stages({"converting": 6.0, "bundle written": 24.0}, 25.0)
    assert missing["conversion_s"] is None and missing["verification_s"] is None and missing["write_and_exit_s"] == 1.0


def test_standin_has_train_and_val_folders_of_two_classes(shared, tmp_path) -> None:
    if not timed_cli.CLOTHING.is_dir():
        pytest.skip("clothing-small is absent")
    data = timed_cli.make_standin(tmp_path / "data")
    for split, count in timed_cli.PER_CLASS.items():
        for cls in timed_cli.CLASSES:
            files = list((data / split / cls).iterdir())
            assert len(files) == count and all(f.is_symlink() and f.resolve().is_file() for f in files)
    train = {f.resolve() for cls in timed_cli.CLASSES for f in (data / "train" / cls).iterdir()}
    val = {f.resolve() for cls in timed_cli.CLASSES for f in (data / "val" / cls).iterdir()}
    assert not train & val and not (data / "test").exists()


def test_markdown_reports_ratios_fidelity_and_goals() -> None:
    stages = {"conversion_s": 10.0}
    result = {
        "started_utc": "a", "finished_utc": "b", "command": "scripts/bench_photos_to_bundle.py",
        "machine": {"cpu_model": "X", "cpus": 2, "load_avg_at_start": 1.0, "load_avg_at_end": 2.0},
        "summary": {
            "before_train_wall_s": 15.0, "after_train_wall_s": 10.0, "before_export_wall_s": 55.0, "after_export_wall_s": 11.0,
            "before_train_cpu_s": 20.0, "after_train_cpu_s": 12.0, "before_export_cpu_s": 60.0, "after_export_cpu_s": 14.0,
            "before_photos_to_bundle_wall_s": 70.0, "after_one_command_wall_s": 20.0, "after_one_command_cpu_s": 22.0,
            "before_export_stages": stages, "after_export_stages": {"conversion_s": 4.0},
            "recipe_10_wall_s": 61.0, "recipe_10_cpu_s": 100.0, "recipe_10_val_acc": 0.95, "recipe_10_vs_after_train_cold": 6.1, "after_train_val_acc": 0.98,
            "fidelity": {"after_int8": {"calibration_images": 64, "float_side": "keras", "agreement": 0.995, "drop_points": 0.0, "float_acc": 0.98, "tflite_acc": 0.98, "images": 160}},
            "goals": {"photos_to_bundle_under_30_s": True, "export_quantize_at_most_15_s": True},
        },
    }
    text = bench.markdown(result)
    assert "| `tledge export --quantize` | 55.0 | 11.0 | 5.00x |" in text
    assert "| 70.0 | 20.0 | 3.50x | 80.0 | 22.0 |" in text
    assert "| export: conversion_s | 10.0 | 4.0 |" in text
    assert "| 10 epochs | 61.0 | 100.0 | 95.0% | 6.1x (tledge val acc 98.0%) | n/a |" in text
    result["summary"].update(recipe_10_vs_after_train_backbone_cached=8.7, after_one_command_backbone_cached_wall_s=18.0)
    text = bench.markdown(result)
    assert "| 10 epochs | 61.0 | 100.0 | 95.0% | 6.1x (tledge val acc 98.0%) | 8.7x |" in text
    assert "| one command, new data, backbone already converted | | 18.0 |" in text
    assert "| after_int8 | 64 | - | keras | 99.50% | 0.0 |" in text
    assert "| photos_to_bundle_under_30_s | yes |" in text
