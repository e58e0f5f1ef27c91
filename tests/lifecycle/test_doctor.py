"""`tledge doctor`: each check, exit code 0 only when all pass, a fix for each failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.doctor import DoctorOptions, Status, diagnose, xnnpack_active
from lifecycle_models import copy_bundle, rewrite_selftest, tamper_model
from edge.cli import app

runner = CliRunner()


def _checks(output: str) -> dict[str, dict]:
    report = json.loads(output)
    return {c["name"]: c for c in report["checks"]} | {"_ok": report["ok"]}


def test_good_bundle_passes_every_check(bundles: dict[str, Path]) -> None:
    result = runner.invoke(app, ["doctor", str(bundles["uint8"]), "--json", "--threads", "1"])
    assert result.exit_code == 0, result.output
    checks = _checks(result.stdout)
    assert checks["_ok"] is True
    for name in ("python", "interpreter", "threads", "checksums", "xnnpack", *(f"selftest[{i}]" for i in range(4))):
        assert checks[name]["status"] == "pass", checks[name]
    assert checks["interpreter"]["detail"].startswith(("ai-edge-litert ", "tflite-runtime "))
    assert "model.tflite and selftest.npz match manifest.json" in checks["checksums"]["detail"]
    assert "largest difference 0 codes (allowed 8)" in checks["selftest[0]"]["detail"]


def test_text_report_ends_with_a_verdict(bundles: dict[str, Path]) -> None:
    result = runner.invoke(app, ["doctor", str(bundles["float32"])])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "all checks passed"
    assert any(line.startswith("PASS  selftest[3]: reference input of class gray") for line in lines)


def test_damaged_bundle_fails_checksums_with_a_fix(bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = copy_bundle(bundles["uint8"], tmp_path / "b")
    tamper_model(bundle)
    result = runner.invoke(app, ["doctor", str(bundle)])
    assert result.exit_code == 1
    assert "FAIL  checksums:" in result.stdout and "does not match its manifest" in result.stdout
    assert "fix: copy the bundle folder again (e.g. `tledge deploy`), or re-export it" in result.stdout
    assert result.stdout.strip().endswith("1 check(s) failed")


def test_failing_selftest_fails_per_input(bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = copy_bundle(bundles["uint8"], tmp_path / "b")
    rewrite_selftest(bundle, outputs_shift=30)
    result = runner.invoke(app, ["doctor", str(bundle), "--json"])
    assert result.exit_code == 1
    checks = _checks(result.stdout)
    assert checks["_ok"] is False and checks["checksums"]["status"] == "pass"
    for i in range(4):
        assert checks[f"selftest[{i}]"]["status"] == "fail"
        assert "largest difference 30 codes (allowed 8)" in checks[f"selftest[{i}]"]["detail"]
        assert "check the interpreter package and version" in checks[f"selftest[{i}]"]["fix"]


def test_missing_selftest_file_fails_checksums(bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = copy_bundle(bundles["uint8"], tmp_path / "b")
    (bundle / "selftest.npz").unlink()
    result = runner.invoke(app, ["doctor", str(bundle), "--json"])
    assert result.exit_code == 1
    assert "selftest.npz is missing" in _checks(result.stdout)["checksums"]["detail"]


def test_bundle_without_selftest_is_skipped_not_failed(bundles: dict[str, Path]) -> None:
    report = diagnose(DoctorOptions(bundle=bundles["no-selftest"]))
    assert report.ok
    assert [c.status for c in report.checks if c.name == "selftest"] == [Status.SKIP]


def test_source_is_opened_and_its_rate_reported(bundles: dict[str, Path], video: Path) -> None:
    result = runner.invoke(app, ["doctor", "--source", str(video), "--json", "--seconds", "2"])
    assert result.exit_code == 0, result.output
    detail = _checks(result.stdout)["source"]["detail"]
    assert "frame(s) of 64x48 at" in detail and "frames/s" in detail


def test_missing_source_fails_with_a_fix(tmp_path: Path) -> None:
    result = runner.invoke(app, ["doctor", "--source", str(tmp_path / "nope.mp4")])
    assert result.exit_code == 1
    assert "FAIL  source:" in result.stdout and "fix: " in result.stdout


def test_bad_delegate_fails_with_a_fix(bundles: dict[str, Path]) -> None:
    result = runner.invoke(app, ["doctor", str(bundles["uint8"]), "--delegate", "libnot-a-delegate.so.1", "--json"])
    assert result.exit_code == 1
    check = _checks(result.stdout)["delegate"]
    assert check["status"] == "fail" and "leave out --delegate" in check["fix"]


def test_xnnpack_detection_tells_delegated_from_reference_kernels(bundles: dict[str, Path]) -> None:
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    data = (bundles["float32"] / "model.tflite").read_bytes()
    default = litert.Interpreter(model_content=data)
    default.allocate_tensors()
    plain = litert.Interpreter(model_content=data, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    plain.allocate_tensors()
    assert xnnpack_active(default) is True
    assert xnnpack_active(plain) is False
