"""The bad-image corpus through the device side: `tledge predict` on every file, and the
image-folder source of `tledge run`. Bad files are skipped and named; the rest classified."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bad_inputs import ImageCase, write_image_corpus
from typer.testing import CliRunner

from edge.bundle import load_model_info
from edge.classifier import Classifier
from edge.pipeline import Pipeline, PipelineOptions
from edge.sources import ImageSource

LABELS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    from tiny_models import image_classifier_tflite, write_bundle

    return write_bundle(tmp_path_factory.mktemp("edge_bad") / "tiny", image_classifier_tflite(len(LABELS), 16), LABELS)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[ImageCase]:
    return write_image_corpus(tmp_path_factory.mktemp("corpus"))


def test_predict_classifies_the_good_and_names_the_bad(bundle: Path, corpus: list[ImageCase]) -> None:
    from edge.cli import app

    named = [c for c in corpus if c.name != "non_utf8_name.jpg"]  # CliRunner's own stdout is strict UTF-8; see below
    result = CliRunner().invoke(app, ["predict", str(bundle), *[os.fspath(c.path) for c in named], "--json"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(records) == sum(1 for c in named if c.shape is not None)
    assert all(r["label"] in LABELS for r in records)
    for case in named:
        if case.shape is None:
            assert f"skipped: {case.path}" in result.stderr, case.name


def test_predict_json_names_a_non_utf8_file_so_it_can_be_found_again(bundle: Path, corpus: list[ImageCase]) -> None:
    """In a real process with stdout to a pipe: the JSON "path" reads back to the file's bytes."""
    import subprocess
    import sys

    from tledge_paths import ROOT

    (odd,) = [c for c in corpus if c.name == "non_utf8_name.jpg"]
    code = "import sys; from edge.cli import main; sys.argv = ['tledge'] + sys.argv[1:]; main()"
    result = subprocess.run([sys.executable, "-c", code, "predict", str(bundle), os.fspath(odd.path), "--json"],
                            cwd=ROOT, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    record = json.loads(result.stdout.decode("utf-8").splitlines()[-1])
    assert os.fsencode(record["path"]) == os.fsencode(odd.path)


def test_predict_exits_1_when_every_image_is_bad(bundle: Path, corpus: list[ImageCase]) -> None:
    from edge.cli import app

    bad = [os.fspath(c.path) for c in corpus if c.shape is None]
    result = CliRunner().invoke(app, ["predict", str(bundle), *bad])
    assert result.exit_code == 1 and "error:" in result.stderr and "Traceback" not in result.output


class Collect:
    def __init__(self) -> None:
        self.count = 0

    def emit(self, frame_rgb: object, result: object) -> None:
        self.count += 1

    def close(self) -> None:
        pass


def test_an_image_folder_source_skips_bad_files_and_runs_on(bundle: Path, corpus: list[ImageCase]) -> None:
    folder = corpus[0].path.parent
    source = ImageSource(folder)
    sink = Collect()
    stats = Pipeline(Classifier(load_model_info(bundle), threads=1), source, [sink], PipelineOptions()).run()
    good = sum(1 for c in corpus if c.shape is not None)
    assert stats.frames == sink.count == good and stats.reason == "end of input"
    skipped = {p.name for p, _ in source.skipped}
    listed = {p.name for p in source.paths}
    # Links that point nowhere are not files, so the folder listing leaves them out.
    assert skipped == {c.path.name for c in corpus if c.shape is None and c.path.name in listed}
