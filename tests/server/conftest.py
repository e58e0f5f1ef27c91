"""Fixtures for the live view tests (see live_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from live_helpers import make_colour_model, write_colour_video

from edge.bundle import ModelInfo, load_model_info


@pytest.fixture(scope="session")
def colour_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model.tflite, labels.txt): a real TFLite model that names a frame's dominant colour."""
    return make_colour_model(tmp_path_factory.mktemp("colour-model"))


@pytest.fixture(scope="session")
def colour_info(colour_model: tuple[Path, Path]) -> ModelInfo:
    model, labels = colour_model
    return load_model_info(model, labels_path=labels)


@pytest.fixture(scope="session")
def colour_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s MJPG video at 20 fps: red, green, blue segments with a moving bar."""
    path = tmp_path_factory.mktemp("colour-video") / "colours.avi"
    write_colour_video(path)
    return path


@pytest.fixture(scope="session")
def big_noisy_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """640x480 at 30 fps with heavy noise: JPEGs big enough to fill a stalled viewer's socket fast."""
    path = tmp_path_factory.mktemp("noisy-video") / "noisy.avi"
    write_colour_video(path, frames_per_colour=10, fps=30.0, size=(640, 480), noise=60.0)
    return path
