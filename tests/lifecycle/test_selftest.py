"""The golden self-test: made by the exporter's writer, checked by the device (edge.selftest),
and run by `predict` / `run` at start; damaged and failing self-tests are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge.bundle import load_model_info
from edge.classifier import Classifier
from edge.errors import BundleIntegrityError, SelfTestError
from edge.selftest import Tolerance, has_selftest, load_selftest, run_selftest, verify_classifier
from lifecycle_models import COLOURS, colour_image, copy_bundle, read_manifest, rewrite_selftest, tamper_model
from edge.cli import app

runner = CliRunner()


def test_writer_stores_one_input_per_class_covered_by_the_manifest(bundles: dict[str, Path]) -> None:
    bundle = bundles["uint8"]
    entry = read_manifest(bundle)["selftest"]
    info = load_model_info(bundle)
    data = load_selftest(info)
    assert entry["file"] == "selftest.npz" and entry["inputs"] == len(COLOURS) == data.count
    assert sorted(data.classes.tolist()) == list(range(len(COLOURS)))
    assert data.inputs.dtype == np.uint8 and data.inputs.shape == (4, 32, 32, 3)
    assert data.outputs.dtype == np.uint8 and data.outputs.shape == (4, 4)
    # the colour model is right on its own reference inputs: the outputs are real, not zeros
    assert data.outputs.argmax(axis=1).tolist() == data.classes.tolist()


@pytest.mark.parametrize("kind", ["uint8", "float32"])
def test_selftest_passes_on_this_runtime_at_1_2_and_4_threads(bundles: dict[str, Path], kind: str) -> None:
    info = load_model_info(bundles[kind])
    for threads in (1, 2, 4):
        report = verify_classifier(Classifier(info, threads=threads), info)
        assert report is not None and report.passed and len(report.results) == 4
        assert report.units == ("codes" if kind == "uint8" else "score")


def test_tolerance_boundary_for_integer_outputs(bundles: dict[str, Path], tmp_path: Path) -> None:
    """Off by exactly the stated number of codes passes; one more fails."""
    steps = Tolerance().quantized_steps
    for shift, passes in ((steps, True), (steps + 1, False)):
        bundle = copy_bundle(bundles["uint8"], tmp_path / f"shift{shift}")
        rewrite_selftest(bundle, outputs_shift=shift)
        info = load_model_info(bundle)
        report = run_selftest(Classifier(info, threads=1), load_selftest(info))
        assert report.passed is passes, report.to_dict()
        assert max(r.max_diff for r in report.results) == shift


def test_float_outputs_off_beyond_tolerance_fail(bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = copy_bundle(bundles["float32"], tmp_path / "f")
    rewrite_selftest(bundle, outputs_shift=0)
    assert verify_classifier(Classifier(load_model_info(bundle)), load_model_info(bundle)).passed
    path = bundle / "selftest.npz"
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["outputs"] = arrays["outputs"] + np.float32(0.05)
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    rewrite_selftest(bundle, raw=buffer.getvalue())
    info = load_model_info(bundle)
    with pytest.raises(SelfTestError, match="self-test failed on 4 of 4"):
        verify_classifier(Classifier(info), info)


def test_missing_selftest_file_is_an_error_with_a_remedy(bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = copy_bundle(bundles["uint8"], tmp_path / "b")
    (bundle / "selftest.npz").unlink()
    with pytest.raises(SelfTestError, match="selftest.npz is missing.*copy the whole bundle folder again"):
        load_selftest(load_model_info(bundle))


def test_damaged_selftest_file_fails_its_checksum(bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = copy_bundle(bundles["uint8"], tmp_path / "b")
    path = bundle / "selftest.npz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(SelfTestError, match="does not match its manifest"):
        load_selftest(load_model_info(bundle))


@pytest.mark.parametrize("raw", [b"not a zip at all", b"PK\x03\x04" + b"\x00" * 40], ids=["text", "broken-zip"])
def test_corrupt_selftest_with_matching_checksum_is_refused(bundles: dict[str, Path], tmp_path: Path, raw: bytes) -> None:
    bundle = copy_bundle(bundles["uint8"], tmp_path / "b")
    rewrite_selftest(bundle, raw=raw)
    with pytest.raises(SelfTestError, match="self-test file is corrupt"):
        load_selftest(load_model_info(bundle))


def test_selftest_for_another_model_is_refused(bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = copy_bundle(bundles["uint8"], tmp_path / "b")
    rewrite_selftest(bundle, raw=(bundles["other-schema"] / "selftest.npz").read_bytes())
    info = load_model_info(bundle)
    with pytest.raises(SelfTestError, match="made for another model"):
        verify_classifier(Classifier(info), info)


def test_tampered_model_fails_before_the_selftest(bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = copy_bundle(bundles["uint8"], tmp_path / "b")
    tamper_model(bundle)
    with pytest.raises(BundleIntegrityError, match="does not match its manifest"):
        load_model_info(bundle)


def _image(tmp_path: Path) -> Path:
    import cv2

    path = tmp_path / "red.png"
    cv2.imwrite(str(path), cv2.cvtColor(colour_image("red", (50, 70), np.random.default_rng(1)), cv2.COLOR_RGB2BGR))
    return path


def test_predict_runs_the_selftest_and_refuses_a_failing_bundle(bundles: dict[str, Path], tmp_path: Path) -> None:
    image = _image(tmp_path)
    good = runner.invoke(app, ["predict", str(bundles["uint8"]), str(image), "--json"])
    assert good.exit_code == 0, good.output
    assert "self-test: 4 reference inputs passed" in good.stderr
    assert json.loads(good.stdout.strip().splitlines()[-1])["label"] == "red"

    bad = copy_bundle(bundles["uint8"], tmp_path / "bad")
    rewrite_selftest(bad, outputs_shift=40)
    refused = runner.invoke(app, ["predict", str(bad), str(image)])
    assert refused.exit_code == 1
    assert "the self-test failed on 4 of 4 reference inputs" in refused.stderr
    assert "tledge doctor" in refused.stderr and "Traceback" not in refused.output
    assert refused.stdout == ""


def test_run_refuses_a_failing_bundle_before_opening_the_source(bundles: dict[str, Path], tmp_path: Path, video: Path) -> None:
    bad = copy_bundle(bundles["uint8"], tmp_path / "bad")
    rewrite_selftest(bad, outputs_shift=40)
    result = runner.invoke(app, ["run", str(bad), "--source", str(video), "--display", "off", "--max-frames", "3"])
    assert result.exit_code == 1
    assert "self-test failed" in result.stderr and result.stdout == ""


def test_bundles_without_a_selftest_say_so_and_run(bundles: dict[str, Path], tflites: dict[str, bytes], tmp_path: Path, video: Path) -> None:
    assert not has_selftest(load_model_info(bundles["no-selftest"]))
    image = _image(tmp_path)
    old = runner.invoke(app, ["predict", str(bundles["no-selftest"]), str(image)])
    assert old.exit_code == 0 and "exported before self-tests existed" in old.stderr
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(tflites["uint8"])
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(COLOURS) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["run", str(plain), "--labels", str(labels), "--source", str(video), "--display", "off", "--max-frames", "3"])
    assert result.exit_code == 0, result.output
    assert "a plain .tflite: no self-test to run" in result.stderr
    assert len(result.stdout.strip().splitlines()) == 3
