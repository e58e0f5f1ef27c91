"""Fixtures for the edge tests: tiny real .tflite models (see edge_models.py), videos."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_models import LABELS, build_keras_model, colour_images, convert, write_bundle


@pytest.fixture(scope="session")
def keras_colour_model():
    return build_keras_model()


@pytest.fixture(scope="session")
def colour_tflites(keras_colour_model, tmp_path_factory) -> dict[str, Path]:
    """Bare .tflite files (no labels inside) per mode: float32, uint8, int8."""
    folder = tmp_path_factory.mktemp("tflite")
    paths = {}
    for mode in ("float32", "uint8", "int8"):
        paths[mode] = folder / f"colour_{mode}.tflite"
        paths[mode].write_bytes(convert(keras_colour_model, mode))
    return paths


@pytest.fixture(scope="session")
def colour_bundle(colour_tflites, tmp_path_factory) -> Path:
    """A tledge bundle folder around the uint8-io int8 model."""
    return write_bundle(tmp_path_factory.mktemp("bundle") / "colours", colour_tflites["uint8"].read_bytes())


@pytest.fixture(scope="session")
def labels_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "labels.txt"
    path.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def colour_video(tmp_path_factory) -> tuple[Path, list[str]]:
    """An MJPG video, 8 frames each of red, green, blue and gray (noisy), 80x60 px at 20 fps."""
    import cv2

    path = tmp_path_factory.mktemp("colour_video") / "colours.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (80, 60))
    truth = []
    frames = colour_images(4, (60, 80), seed=3)
    for k, frame_rgb in enumerate(frames):
        for _ in range(8):
            writer.write(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
            truth.append(LABELS[k])
    writer.release()
    return path, truth
