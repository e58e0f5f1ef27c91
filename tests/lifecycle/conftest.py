"""Fixtures for the model-lifecycle tests: tiny real bundles with self-tests, a video."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle_models import COLOURS, colour_video, convert, keras_model, write_bundle


@pytest.fixture(scope="session")
def tflites() -> dict[str, bytes]:
    """Converted models: uint8 and float32 at 32 px with 4 labels; uint8 at 40 px with 3 labels."""
    return {
        "uint8": convert(keras_model(32, COLOURS), 32, "uint8"),
        "float32": convert(keras_model(32, COLOURS), 32, "float32"),
        "uint8-40px-3labels": convert(keras_model(40, COLOURS[:3]), 40, "uint8"),
    }


@pytest.fixture(scope="session")
def bundles(tflites: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Read-only bundle folders (copy before damaging): "uint8", "float32", "other-schema",
    "no-selftest" (as exported before self-tests existed)."""
    root = tmp_path_factory.mktemp("bundles")
    return {
        "uint8": write_bundle(root / "uint8", tflites["uint8"], COLOURS, 32),
        "float32": write_bundle(root / "float32", tflites["float32"], COLOURS, 32),
        "other-schema": write_bundle(root / "other", tflites["uint8-40px-3labels"], COLOURS[:3], 40),
        "no-selftest": write_bundle(root / "old", tflites["uint8"], COLOURS, 32, selftest=False),
    }


@pytest.fixture(scope="session")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colour_video(tmp_path_factory.mktemp("video") / "colours.avi")
