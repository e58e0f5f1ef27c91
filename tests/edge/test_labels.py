"""Labels files: plain one-name-per-line (tledge's, Google's) and index-prefixed
("0 cat" from Teachable Machine, "0:cat" from pycoral) read as the same names."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.bundle import parse_labels, read_labels
from edge.errors import ModelError
from edge.cli import app


@pytest.mark.parametrize(
    "text",
    [
        "0 cat\n1 dog\n2 t shirt\n",  # Teachable Machine
        "0:cat\n1:dog\n2:t shirt\n",  # pycoral
        "0: cat\n1 : dog\n2  t shirt  \n",  # spaces around the separator
        "1 dog\n0 cat\n2 t shirt\n",  # out of order: the index decides the position
        "0 cat\r\n1 dog\r\n2 t shirt\r\n\r\n",  # Windows line ends, trailing blank line
    ],
)
def test_index_prefixed_lines_give_the_names(text: str) -> None:
    assert parse_labels(text, "labels.txt") == ("cat", "dog", "t shirt")


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("cat\ndog\nt shirt\n", ("cat", "dog", "t shirt")),  # names with spaces stay whole
        ("t shirt\n0 cat\n", ("t shirt", "0 cat")),  # not every line indexed: all plain
        ("0\n1\n2\n", ("0", "1", "2")),  # names that are numbers
        ("background\ntench, Tinca tinca\n", ("background", "tench, Tinca tinca")),  # Google's form
    ],
)
def test_plain_lines_are_the_names(text: str, labels: tuple[str, ...]) -> None:
    assert parse_labels(text, "labels.txt") == labels


def test_a_repeated_or_missing_index_is_refused_with_the_fix() -> None:
    with pytest.raises(ModelError, match="gives index 1 twice"):
        parse_labels("0 cat\n1 dog\n1 bird\n", "labels.txt")
    with pytest.raises(ModelError, match=r"no name for index 1; give every output index 0..2 a line"):
        parse_labels("0 cat\n2 bird\n", "labels.txt")


@pytest.mark.slow
def test_googles_imagenet_labels_are_read_as_they_are(shared: Path) -> None:
    path = shared / "models" / "imagenet_labels.txt"
    labels = read_labels(path)
    assert len(labels) == 1001 and labels[0] == "background" and labels[1] == "tench, Tinca tinca"
    assert labels == tuple(path.read_text(encoding="utf-8").splitlines())


def test_predict_with_a_teachable_machine_labels_file(colour_tflites, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("0 red\n1 green\n2 blue\n3 gray\n", encoding="utf-8")
    image = tmp_path / "blue.png"
    cv2.imwrite(str(image), np.full((40, 40, 3), (230, 20, 20), np.uint8))  # BGR: blue
    result = CliRunner().invoke(app, ["predict", str(colour_tflites["uint8"]), str(image), "--labels", str(labels), "--json"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.splitlines()[-1])
    assert line["label"] == "blue" and [t["label"] for t in line["top"]][:1] == ["blue"]
