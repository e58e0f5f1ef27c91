"""Full training runs on tiny generated images: the run directory, reproducibility, the
feature cache, unreadable files, tiny-data fallbacks, fine-tuning, the CLI."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trainer.errors import DataError, OutputError
from train_helpers import colour_dataset, tiny_options
from edge.cli import app
from trainer.config import FineTuneOptions
from trainer.train import train


def test_a_full_run_writes_every_report(tiny_run: Path) -> None:
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    for split in ("val", "test"):
        m = metrics[split]
        assert m["n"] == 8 and 0.0 <= m["accuracy"] <= 1.0
        assert set(m["per_class"]) == {"circle", "square", "stripes", "triangle"}
        assert set(m["per_class"]["circle"]) == {"precision", "recall", "f1", "support"}
        assert np.asarray(m["confusion_matrix"]).sum() == 8
    assert metrics["head"]["epochs_run"] == 1
    with (tiny_run / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["stage"] == "head" and float(rows[0]["loss"]) > 0 and rows[0]["val_accuracy"]
    report = json.loads((tiny_run / "data_report.json").read_text())
    assert report["counts"]["train"] == {"circle": 20, "square": 20, "stripes": 20, "triangle": 20}
    assert report["skipped"] == []
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["run_dir"] == str(tiny_run) and summary["val_accuracy"] == metrics["val"]["accuracy"]
    for png in ("learning_curves.png", "confusion_val.png", "confusion_test.png"):
        assert (tiny_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_run(synthetic_dataset: Path, tmp_path: Path) -> None:
    options = tiny_options(synthetic_dataset, tmp_path, epochs=3)
    first, second = train(options), train(options)
    assert first.run_dir != second.run_dir
    for name in ("splits.json", "history.csv", "labels.txt"):
        assert (first.run_dir / name).read_text() == (second.run_dir / name).read_text(), name
    assert first.metrics["val"] == second.metrics["val"]


def test_features_are_cached_on_disk_and_reused(synthetic_dataset: Path, tmp_path: Path) -> None:
    options = tiny_options(synthetic_dataset, tmp_path / "runs", cache_dir=tmp_path / "cache")
    cold = train(options).metrics["features"]
    warm = train(options).metrics["features"]
    total = 80 * 2 + 16  # train images x (clean + 1 augmented view) + val/test clean
    assert cold["views_computed"] == total and cold["views_cached"] == 0
    assert warm["views_computed"] == 0 and warm["views_cached"] == total
    assert warm["engine"] is None  # nothing to compute: no backbone pass at all
    bigger = replace(options, model=replace(options.model, image_size=56))
    assert train(bigger).metrics["features"]["views_computed"] == total  # another size, another key


def test_unreadable_files_are_skipped_and_reported_not_a_crash(tmp_path: Path) -> None:
    root = colour_dataset(tmp_path / "d", {"a": 6, "b": 6})
    (root / "a" / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = (root / "b" / "b_0.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(good[: len(good) // 2])  # header fine, pixels cut
    result = train(tiny_options(root, tmp_path / "runs"))
    report = json.loads((result.run_dir / "data_report.json").read_text())
    assert {Path(s["path"]).name for s in report["skipped"]} == {"garbage.png", "truncated.png"}
    splits = json.loads((result.run_dir / "splits.json").read_text())
    used = {Path(p).name for s in ("train", "val", "test") for p, _ in splits[s]}
    assert "truncated.png" not in used and len(used) == 12


def test_ten_images_trains_with_a_validation_image_per_class(tmp_path: Path) -> None:
    root = colour_dataset(tmp_path / "d", {"a": 5, "b": 5})  # the original recipe's scale
    result = train(tiny_options(root, tmp_path / "runs"))
    assert result.metrics["evaluation"]["mode"] == "val"
    assert result.metrics["val"]["n"] == 2 and result.metrics["test"]["n"] == 2


def test_a_class_without_validation_images_falls_back_to_kfold(tmp_path: Path) -> None:
    root = colour_dataset(tmp_path / "d", {"a": 2, "b": 3})
    result = train(tiny_options(root, tmp_path / "runs", split=(0.0, 0.0)))
    assert result.metrics["evaluation"]["mode"] == "kfold"
    assert result.metrics["val"] is None
    estimate = result.metrics["val_estimate"]
    assert estimate["folds"] == 2 and estimate["images"] == 5 and 0.0 <= estimate["accuracy"] <= 1.0
    assert result.summary["val_estimate"] == estimate["accuracy"]
    assert any("no validation images" in w for w in result.warnings)


def test_a_single_image_class_marks_metrics_unavailable(tmp_path: Path) -> None:
    root = colour_dataset(tmp_path / "d", {"a": 1, "b": 4})
    result = train(tiny_options(root, tmp_path / "runs"))
    assert result.metrics["evaluation"]["mode"] == "unavailable"
    assert result.summary["val_accuracy"] is None and result.summary["val_estimate"] is None
    splits = json.loads((result.run_dir / "splits.json").read_text())
    assert len(splits["train"]) == 4 and splits["val"] == []  # val joined train, test kept
    assert "single image" in json.loads((result.run_dir / "data_report.json").read_text())["evaluation"]["reason"]


def test_fine_tuning_reports_whether_it_helped(synthetic_dataset: Path, tmp_path: Path) -> None:
    result = train(tiny_options(synthetic_dataset, tmp_path, fine_tune=FineTuneOptions(blocks=1, epochs=1, augment_views=0)))
    info = result.metrics["fine_tune"]
    assert info["ran"] and info["layers_unfrozen"] >= 1
    assert isinstance(info["helped"], bool) and info["kept"] == info["helped"] == (info["best_epoch"] > 0)
    assert info["val_accuracy_before"] is not None and info["val_accuracy_after"] is not None
    with (result.run_dir / "history.csv").open() as handle:
        assert "fine_tune" in {row["stage"] for row in csv.DictReader(handle)}


def test_a_failed_run_leaves_no_run_directory(synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing the pictures fails: in their own process (here: it cannot start) and then in
    this one (disk full)."""
    import trainer.plots as plots_module
    import trainer.run_dir as run_dir_module

    def broken(*_args: object, **_kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(run_dir_module.sys, "executable", str(tmp_path / "no-python"))
    monkeypatch.setattr(plots_module, "plot_history", broken)
    with pytest.raises(OutputError, match="disk full"):
        train(tiny_options(synthetic_dataset, tmp_path / "runs"))
    assert list((tmp_path / "runs").iterdir()) == []


def test_cli_train_json_and_evaluate(tiny_run: Path, synthetic_dataset: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["train", str(synthetic_dataset), "--out", str(tmp_path), "--weights", "none", "--alpha", "0.35", "--image-size", "48",
            "--epochs", "1", "--augment-views", "0", "--engine", "keras", "--cache", "memory", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(summary["run_dir"]).is_dir() and summary["labels"] == ["circle", "square", "stripes", "triangle"]

    evaluated = runner.invoke(app, ["evaluate", str(tiny_run), "--split", "test", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    recomputed = json.loads(evaluated.stdout.strip().splitlines()[-1])
    stored = json.loads((tiny_run / "metrics.json").read_text())["test"]
    assert recomputed["n"] == stored["n"] == 8
    assert recomputed["accuracy"] == pytest.approx(stored["accuracy"], abs=1 / 8 + 1e-9)


def test_cli_data_errors_exit_1_with_the_remedy(tmp_path: Path) -> None:
    colour_dataset(tmp_path / "one", {"only": 3})
    result = CliRunner().invoke(app, ["train", str(tmp_path / "one"), "--weights", "none", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "at least 2" in result.output and "Traceback" not in result.output


def test_library_raises_data_error_for_an_empty_class(tmp_path: Path) -> None:
    root = colour_dataset(tmp_path / "d", {"a": 3, "b": 3})
    (root / "c").mkdir()
    with pytest.raises(DataError, match="'c'"):
        train(tiny_options(root, tmp_path / "runs"))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_tiny_run_fixture_is_a_copyable_run(tiny_run: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_run, tmp_path / "copy"))
    assert (copy / "model.keras").stat().st_size > 10_000


def test_an_unwritable_feature_cache_falls_back_to_memory(synthetic_dataset: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    result = train(tiny_options(synthetic_dataset, tmp_path / "runs", cache_dir=blocker, augment_views=0))
    assert result.metrics["features"]["views_computed"] == 96
    assert any("not writable" in w for w in result.warnings)
