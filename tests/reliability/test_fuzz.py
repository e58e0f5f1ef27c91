"""A short, bounded run of scripts/fuzz.py as a normal test (the long run is the script).

Also proves the harness can fail: a planted bug in the decoder must be reported.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from tledge_paths import ROOT

SECONDS = 3.0  # per target: a few hundred examples each on a shared 2-core machine


@pytest.fixture(scope="module")
def fuzz() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tledge_fuzz", ROOT / "scripts" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tledge_fuzz"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_model() -> bytes:
    pytest.importorskip("tensorflow")
    from tiny_models import image_classifier_tflite

    return image_classifier_tflite(3, 16)


def test_image_decoding_lets_only_tledge_errors_escape(fuzz: ModuleType) -> None:
    report = fuzz.fuzz_images(SECONDS, first_seed=1)
    assert report.failures == []
    assert report.examples >= 100
    assert report.refused > 0 and report.accepted > 0  # mutations both break and spare files


def test_bundle_reading_lets_only_tledge_errors_escape(fuzz: ModuleType, tiny_model: bytes) -> None:
    report = fuzz.fuzz_bundle(SECONDS, first_seed=1, model=tiny_model)
    assert report.failures == []
    assert report.examples >= 50
    assert report.refused > 0 and report.accepted > 0


def test_classifier_on_mutated_models_never_crashes(fuzz: ModuleType, tiny_model: bytes) -> None:
    report = fuzz.fuzz_classifier(SECONDS + 3.0, first_seed=1, model=tiny_model)
    assert report.crashes == [] and report.failures == []
    assert report.examples >= 20


def test_the_harness_reports_a_planted_bug(fuzz: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import edge.images

    real = edge.images.decode_rgb

    def buggy(data: bytes, name: str = "<bytes>") -> object:
        if data[:2] == b"\xff\xd8" and len(data) % 2:  # some JPEGs
            raise KeyError("planted")
        return real(data, name)

    monkeypatch.setattr(edge.images, "decode_rgb", buggy)
    monkeypatch.setattr(fuzz, "OUT", tmp_path)
    report = fuzz.fuzz_images(2.0, first_seed=2)
    assert [f.error for f in report.failures] == ["KeyError"]
    assert (tmp_path / "fuzz-failures").is_dir() and any((tmp_path / "fuzz-failures").iterdir())
