"""Fast exporter tests without TensorFlow work: sampling, verdicts, options, staging, run checks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import typer

from trainer.errors import ExportError
from trainer.export.bundle_writer import BundleStaging, check_target
from trainer.cli.export import choose_mode
from trainer.export.convert import representative_dataset, stratified_sample
from trainer.export.options import ExportOptions, IOType, QuantizationMode
from trainer.stats import wilson
from trainer.export.verify import VerificationFailed, judge


# -- calibration sampling ----------------------------------------------------------
def _items(counts: dict[int, int]) -> list[tuple[str, int]]:
    return [(f"c{label}/{i}.png", label) for label, n in counts.items() for i in range(n)]


def test_stratified_sample_balances_classes():
    items = _items({0: 500, 1: 40, 2: 300})
    chosen = stratified_sample(items, 300, seed=1)
    per_class = Counter(label for _, label in chosen)
    assert len(chosen) == 300 and len(set(chosen)) == 300
    assert per_class[1] == 40  # the rare class gives everything it has
    assert per_class[0] == per_class[2] == 130  # the rest is shared evenly


def test_stratified_sample_is_seeded_and_bounded():
    items = _items({0: 30, 1: 30})
    assert stratified_sample(items, 20, seed=3) == stratified_sample(items, 20, seed=3)
    assert stratified_sample(items, 20, seed=3) != stratified_sample(items, 20, seed=4)
    assert len(stratified_sample(items, 1000)) == 60
    assert stratified_sample([], 10) == []


def test_representative_dataset_yields_raw_pixels_spanning_0_255(tmp_path):
    import cv2
    import numpy as np

    paths = []
    for i, value in enumerate((90, 140)):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), np.full((30, 40, 3), value, np.uint8))
        paths.append(str(path))
    samples = [s[0] for s in representative_dataset(paths, (16, 16), "center_crop")()]
    assert [s.shape for s in samples] == [(1, 16, 16, 3)] * 2 and samples[0].dtype == np.float32
    assert samples[0].min() == 0.0 and samples[0].max() == 255.0  # the range anchor
    assert samples[1].min() == samples[1].max() == 140.0  # untouched raw pixels, no scaling
    with pytest.raises(ExportError, match="training split is empty"):
        representative_dataset([], (16, 16), "center_crop")


def test_representative_dataset_names_a_broken_image(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ExportError, match="bad.jpg"):
        list(representative_dataset([str(bad)], (16, 16), "stretch")())


# -- verdict ---------------------------------------------------------------------------
def _report(float_acc: float, tflite_acc: float, deltas: dict[str, float]) -> dict:
    """A verification report as `verify_detailed` writes it, for 100 val+test images."""
    return {
        "splits": {"all": {"images": 100, "float_accuracy": float_acc, "tflite_accuracy": tflite_acc,
                           "top1_agreement": 0.9, "drop_points": round(100 * (float_acc - tflite_acc), 4),
                           "float_accuracy_interval": wilson(round(100 * float_acc), 100).to_json(),
                           "tflite_accuracy_interval": wilson(round(100 * tflite_acc), 100).to_json()}},
        "per_class": [{"label": k, "images": 10, "float_accuracy": 0.9, "tflite_accuracy": 0.9 + v / 100, "delta_points": v}
                      for k, v in deltas.items()],
    }


def test_judge_passes_within_threshold():
    verdict = judge(_report(0.90, 0.89, {"hat": -5.0, "dress": 4.0}), max_drop=2.0, accept_drop=False)
    assert verdict["passed"] and not verdict["accepted_drop"] and verdict["drop_points"] == pytest.approx(1.0)
    assert verdict["suffered"] == ["hat"]


def test_judge_fails_and_names_the_classes_that_suffered():
    report = _report(0.90, 0.85, {"hat": -20.0, "dress": 0.0, "shoes": -10.0, "pants": 5.0})
    with pytest.raises(VerificationFailed) as caught:
        judge(report, max_drop=2.0, accept_drop=False)
    message = str(caught.value)
    assert "5.00" in message and "90.0 %" in message and "85.0 %" in message and "n=100" in message
    assert "hat (-20.0)" in message and "shoes (-10.0)" in message
    assert "dress" not in message and "pants" not in message and "--accept-drop" in message
    assert message.index("hat") < message.index("shoes")  # worst first
    assert caught.value.report["passed"] is False and caught.value.report["suffered"] == ["hat", "shoes"]


def test_judge_accepts_a_drop_when_asked():
    verdict = judge(_report(0.90, 0.80, {"hat": -10.0}), max_drop=2.0, accept_drop=True)
    assert not verdict["passed"] and verdict["accepted_drop"]


# -- options and flags -----------------------------------------------------------------
def test_options_are_frozen_and_coerce_strings():
    options = ExportOptions.for_int8("int8", out="models/x")
    assert options.quantization is QuantizationMode.INT8 and options.io_type is IOType.INT8
    assert options.out == Path("models/x")
    assert ExportOptions().quantization is QuantizationMode.FLOAT32
    with pytest.raises(AttributeError):
        options.force = True  # type: ignore[misc]
    with pytest.raises(ValueError):
        ExportOptions(quantization="int4")


@pytest.mark.parametrize(
    "quantize, mode, io, expected",
    [
        (False, None, None, QuantizationMode.FLOAT32),
        (True, None, None, QuantizationMode.INT8),
        (True, None, IOType.INT8, QuantizationMode.INT8),
        (True, QuantizationMode.FLOAT16, None, QuantizationMode.FLOAT16),
        (False, QuantizationMode.DYNAMIC, None, QuantizationMode.DYNAMIC),
    ],
)
def test_choose_mode(quantize, mode, io, expected):
    assert choose_mode(quantize, mode, io) is expected


@pytest.mark.parametrize("quantize, mode, io", [(True, QuantizationMode.FLOAT32, None), (False, None, IOType.INT8), (True, QuantizationMode.FLOAT16, IOType.UINT8)])
def test_choose_mode_refuses_contradictions(quantize, mode, io):
    with pytest.raises(typer.BadParameter):
        choose_mode(quantize, mode, io)


# -- checks of the produced file --------------------------------------------------------
def _summary(ops, dtypes, io="UINT8"):
    from trainer.export.tflite_inspect import TensorSummary, TfliteSummary

    tensor_in = TensorSummary("image", io, (1, 8, 8, 3), 1.0, 0)
    tensor_out = TensorSummary("score", io, (1, 2), 1 / 256, 0)
    return TfliteSummary(tuple(ops), tuple(dtypes), (tensor_in,), (tensor_out,), ("TFLITE_METADATA",))


def test_check_file_refuses_flex_ops_and_float_leftovers():
    from trainer.export import check_file

    int8 = ExportOptions.for_int8()
    check_file(_summary(["CONV_2D", "SOFTMAX"], ["INT8", "UINT8", "INT32"]), int8)
    with pytest.raises(ExportError, match="FlexErf"):
        check_file(_summary(["CONV_2D", "CUSTOM:FlexErf"], ["INT8", "UINT8", "INT32"]), int8)
    with pytest.raises(ExportError, match="full-integer"):
        check_file(_summary(["CONV_2D"], ["FLOAT32", "INT8", "UINT8"]), int8)
    with pytest.raises(ExportError, match="full-integer"):
        check_file(_summary(["CONV_2D"], ["INT8", "INT32"], io="INT8"), int8)  # asked for uint8 I/O
    with pytest.raises(ExportError, match="float32"):
        check_file(_summary(["CONV_2D"], ["INT8", "UINT8"]), ExportOptions.for_dynamic())


# -- staging ---------------------------------------------------------------------------
def test_staging_commits_complete_folder(tmp_path):
    target = tmp_path / "models" / "b"
    with BundleStaging(target, force=False) as stage:
        stage.write("a.txt", b"1")
        stage.write("b.txt", b"2")
        assert not target.exists()
        stage.commit()
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "b.txt"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["b"]  # no staging left


def test_staging_vanishes_when_interrupted(tmp_path):
    target = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        with BundleStaging(target, force=False) as stage:
            stage.write("model.tflite", b"x" * 100)
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_staging_refuses_overwrite_without_force_and_replaces_with_it(tmp_path):
    target = tmp_path / "b"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(ExportError, match="--force"):
        with BundleStaging(target, force=False):
            pass
    assert (target / "old.txt").read_text() == "old"
    with pytest.raises(RuntimeError):
        with BundleStaging(target, force=True) as stage:
            stage.write("new.txt", b"new")
            raise RuntimeError("boom before commit")
    assert [p.name for p in target.iterdir()] == ["old.txt"]  # old bundle intact
    with BundleStaging(target, force=True) as stage:
        stage.write("new.txt", b"new")
        stage.commit()
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_check_target_allows_an_empty_folder_and_refuses_a_file(tmp_path):
    (tmp_path / "empty").mkdir()
    check_target(tmp_path / "empty", force=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        check_target(tmp_path / "file", force=True)
