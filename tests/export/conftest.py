"""Fixtures for the exporter tests: a trained tiny run and its exports, made once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from export_helpers import UNICODE_LABELS, make_tiny_run

@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-class run trained for a few epochs (well above chance), so quantization matters."""
    return make_tiny_run(tmp_path_factory.mktemp("trained"), epochs=6)


@pytest.fixture(scope="session")
def unicode_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 11-class run with non-ASCII labels (label plumbing only)."""
    return make_tiny_run(
        tmp_path_factory.mktemp("unicode"), labels=UNICODE_LABELS, epochs=0,
        splits={"train": 2, "val": 1, "test": 1}, name="unicode",
    )


@pytest.fixture(scope="session")
def export_once(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], object]:
    """export_once(key) -> ExportResult of `trained_run`, converted once per key per session.

    Keys: "int8" (uint8 I/O), "int8-io8" (int8 I/O), "float16", "dynamic", "float32".
    """
    from trainer.export import ExportOptions

    made: dict[str, object] = {}
    options = {
        "int8": lambda out: ExportOptions.for_int8(out=out, accept_drop=True),
        "int8-io8": lambda out: ExportOptions.for_int8("int8", out=out, accept_drop=True),
        # every mode accepts a drop: one flipped image of these 48 is 2.1 points, and which
        # near-tie flips moves with the CPU's float kernels (float16 did on an AMD EPYC);
        # test_export_modes holds each mode's agreement to its own bar
        "float16": lambda out: ExportOptions.for_float16(out=out, accept_drop=True),
        "dynamic": lambda out: ExportOptions.for_dynamic(out=out, accept_drop=True),
        "float32": lambda out: ExportOptions.for_float32(out=out, accept_drop=True),
    }

    def get(key: str) -> object:
        if key not in made:
            from trainer.export import export

            made[key] = export(trained_run, options[key](tmp_path_factory.mktemp("bundles") / key))
        return made[key]

    return get
