"""Shared fixtures: generated data, and ../shared (skipped cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS_NAME = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ../shared folder beside the repo; the test skips when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (real weights, datasets and models live there)")
    return SHARED


@pytest.fixture(scope="session")
def imagenet_weights(shared: Path) -> Path:
    """The real ImageNet MobileNetV2 no-top weights file."""
    path = Path(os.environ.get("TLEDGE_WEIGHTS") or shared / "weights" / WEIGHTS_NAME)
    if not path.is_file():
        pytest.skip(f"real ImageNet weights not found at {path}")
    return path


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny flat folder-per-class dataset: 4 classes x 24 images of 48 px."""
    from trainer.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("synthetic") / "data", per_class=24, size=48, seed=0)


@pytest.fixture(scope="session")
def synthetic_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A generated MJPG video cycling through the synthetic classes, with its truth."""
    from trainer.synthetic import make_video

    return make_video(tmp_path_factory.mktemp("video") / "clip.avi", frames_per_class=10)
