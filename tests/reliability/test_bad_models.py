"""Unusable model files and bundles: each gives a clear `ModelError` from the library and
exit code 1 with a one-line message (no traceback) from `tledge predict`."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from bad_inputs import gradient_rgb, png_bytes
from tledge_paths import ROOT
from PIL import Image
from tiny_models import dense_tflite, image_classifier_tflite, segmentation_tflite, two_output_tflite, with_embedded, write_bundle
from typer.testing import CliRunner

from edge.bundle import MAX_EMBEDDED_BYTES, embedded_files, load_model_info
from edge.classifier import Classifier
from edge.errors import BundleIntegrityError, ModelError

LABELS = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    pytest.importorskip("tensorflow")
    return {"image": image_classifier_tflite(len(LABELS)), "dense": dense_tflite(), "two_outputs": two_output_tflite(), "segmentation": segmentation_tflite()}


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes(Image.fromarray(gradient_rgb(40, 30))))
    return path


def open_classifier(path: Path, labels: Path | None = None) -> Classifier:
    """What every command does with a model path."""
    return Classifier(load_model_info(path, labels_path=labels), threads=1)


def test_a_good_bundle_loads_from_folder_manifest_and_model(models: dict[str, bytes], tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "good", models["image"], LABELS)
    for path in (bundle, bundle / "manifest.json", bundle / "model.tflite"):
        clf = open_classifier(path)
        assert clf.labels == tuple(LABELS)
        prediction = clf.classify(gradient_rgb(40, 30))
        assert prediction.label in LABELS and abs(float(prediction.scores.sum()) - 1.0) < 1e-4


# -- truncated and corrupt .tflite files --------------------------------------------------

def _cuts(data: bytes) -> list[int]:
    return [0, 4, 7, 8, 64, len(data) // 4, len(data) // 2, len(data) - 16, len(data) - 1]


@pytest.mark.parametrize("cut_index", range(9))
def test_truncated_tflite_is_a_model_error(models: dict[str, bytes], tmp_path: Path, cut_index: int) -> None:
    data = models["image"]
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[: _cuts(data)[cut_index]])
    with pytest.raises(ModelError) as info:
        open_classifier(path)
    assert str(path) in str(info.value) or "model" in str(info.value).lower()


@pytest.mark.parametrize("offset", [8, 16, 24, 32, 40])
def test_corrupt_flatbuffer_header_is_a_model_error(models: dict[str, bytes], tmp_path: Path, offset: int) -> None:
    data = bytearray(models["image"])
    data[offset : offset + 8] = b"\xff" * 8  # the root table's offsets / vtable
    path = tmp_path / "corrupt.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError):
        open_classifier(path)


@pytest.mark.parametrize(
    ("rows", "match"),
    [(13_107_216, "declares .* GB of tensors"), (2_818_064, "more than the 4096-pixel limit"), (100_000, "more than the 4096-pixel limit")],
)
def test_a_damaged_tensor_shape_is_refused_before_allocation(models: dict[str, bytes], tmp_path: Path, rows: int, match: str) -> None:
    """Found by scripts/fuzz.py: one changed shape entry made the interpreter allocate
    15 GB for 46 s (13,107,216 rows), or 3.3 GB for 15 s while declaring only 541 MB
    (2,818,064 rows). Declared sizes and the input side are checked before allocation."""
    import struct
    import time

    data = models["image"]
    shape = struct.pack("<5i", 4, 1, 16, 16, 3)  # the flatbuffer vector of the input shape
    assert data.count(shape) >= 1
    path = tmp_path / "damaged_shape.tflite"
    path.write_bytes(data.replace(shape, struct.pack("<5i", 4, 1, rows, 16, 3), 1))
    started = time.perf_counter()
    with pytest.raises(ModelError, match=match):
        open_classifier(path)
    assert time.perf_counter() - started < 5.0  # seconds; allocating took 15-46 s


def test_a_tensor_name_that_is_not_utf8_is_a_model_error(models: dict[str, bytes], tmp_path: Path) -> None:
    """Found by scripts/fuzz.py: the flatbuffer verifier lets it through and the
    interpreter's get_input_details() raised UnicodeDecodeError."""
    data = models["image"]
    name = b"serving_default_keras_tensor"
    assert name in data
    path = tmp_path / "bad_name.tflite"
    path.write_bytes(data.replace(name, b"serving_default_\xfferas_tensor", 1))
    with pytest.raises(ModelError, match="tensor table is damaged"):
        open_classifier(path)


def test_a_photo_passed_as_the_model_is_refused_by_its_header(tmp_path: Path, photo: Path) -> None:
    with pytest.raises(ModelError, match="not a TFLite model"):
        load_model_info(photo)


def test_truncated_model_inside_a_bundle_fails_the_sha256_check(models: dict[str, bytes], tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", models["image"], LABELS)
    model = bundle / "model.tflite"
    model.write_bytes(model.read_bytes()[:-100])
    with pytest.raises(BundleIntegrityError, match="re-export"):
        load_model_info(bundle)


def test_one_changed_weight_byte_fails_the_sha256_check(models: dict[str, bytes], tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", models["image"], LABELS)
    model = bundle / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(models["image"]) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    for path in (bundle, bundle / "manifest.json", model):
        with pytest.raises(BundleIntegrityError, match="does not match its manifest"):
            load_model_info(path)
    assert load_model_info(bundle, verify_sha256=False).model_bytes == bytes(data)


# -- labels that do not fit the model -----------------------------------------------------

def test_manifest_with_too_few_labels(models: dict[str, bytes], tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", models["image"], LABELS, manifest_overrides={"labels": ["cat", "dog"]})
    with pytest.raises(ModelError, match="2 entries but the model has 3 outputs"):
        open_classifier(bundle)


@pytest.mark.parametrize("count", [1, 2, 4, 1001])
def test_labels_file_with_the_wrong_count(models: dict[str, bytes], tmp_path: Path, count: int) -> None:
    model = tmp_path / "bare.tflite"
    model.write_bytes(models["image"])
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(count)) + "\n", encoding="utf-8")
    with pytest.raises(ModelError, match=f"{count} entries but the model has 3 outputs"):
        open_classifier(model, labels)


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "empty"), (b"\n\n \n", "empty"), ("caf\xe9\n".encode("latin-1"), "not UTF-8"), (b"\xff\xfe\x00a", "not UTF-8")],
)
def test_unusable_labels_file(models: dict[str, bytes], tmp_path: Path, content: bytes, match: str) -> None:
    model = tmp_path / "bare.tflite"
    model.write_bytes(models["image"])
    labels = tmp_path / "labels.txt"
    labels.write_bytes(content)
    with pytest.raises(ModelError, match=match):
        open_classifier(model, labels)


def test_labels_with_spaces_and_non_ascii_letters_survive(models: dict[str, bytes], tmp_path: Path) -> None:
    names = ["t-shirt à manches", "Größe 42", "猫"]
    bundle = write_bundle(tmp_path / "b", models["image"], names)
    assert open_classifier(bundle).labels == tuple(names)
    assert open_classifier(bundle, labels=bundle / "labels.txt").labels == tuple(names)


# -- models that are not image classifiers ------------------------------------------------

@pytest.mark.parametrize("kind", ["dense", "two_outputs", "segmentation"])
def test_a_model_that_is_not_an_image_classifier(models: dict[str, bytes], tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.tflite"
    path.write_bytes(models[kind])
    with pytest.raises(ModelError, match="not an image classifier"):
        open_classifier(path)


# -- damaged manifests and embedded metadata ----------------------------------------------

def _rewrite_manifest(bundle: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    result = change(manifest)
    path.write_text(json.dumps(manifest if result is None else result), encoding="utf-8")


MANIFEST_DAMAGE: dict[str, Callable[[dict[str, Any]], Any]] = {
    "json list": lambda m: [m],
    "no format": lambda m: m.pop("format"),
    "model is a string": lambda m: m.update(model="model.tflite"),
    "model file outside the folder": lambda m: m["model"].update(file="../model.tflite"),
    "model file absolute": lambda m: m["model"].update(file="/etc/passwd"),
    "model file is a number": lambda m: m["model"].update(file=7),
    "model file missing": lambda m: m["model"].update(file="other.tflite"),
    "labels is a number": lambda m: m.update(labels=5),
    "labels are numbers": lambda m: m.update(labels=[1, 2, 3]),
    "input is a list": lambda m: m.update(input=[16, 16, 3]),
    "mean is text": lambda m: m["input"].update(mean="zero"),
    "std is zero": lambda m: m["input"].update(std=0),
    "std is NaN": lambda m: m["input"].update(std=float("nan")),
    "unknown resize": lambda m: m["input"].update(resize="zoom"),
    "resize is a list": lambda m: m["input"].update(resize=["center_crop"]),
    "unknown colour order": lambda m: m["input"].update(color_order="YUV"),
}


@pytest.mark.parametrize("damage", sorted(MANIFEST_DAMAGE))
def test_damaged_manifest_is_a_model_error(models: dict[str, bytes], tmp_path: Path, damage: str) -> None:
    bundle = write_bundle(tmp_path / "b", models["image"], LABELS)
    # Bait for "../model.tflite": the very same bytes, so only the path check can refuse it.
    (tmp_path / "model.tflite").write_bytes((bundle / "model.tflite").read_bytes())
    _rewrite_manifest(bundle, MANIFEST_DAMAGE[damage])
    with pytest.raises(ModelError):
        open_classifier(bundle)


@pytest.mark.parametrize("text", ["{", "", "\x00\x01", "[" * 100_000 + "]" * 100_000, '{"format": "tledge.bundle", "model": '])
def test_unparsable_manifest_is_a_model_error(models: dict[str, bytes], tmp_path: Path, text: str) -> None:
    bundle = write_bundle(tmp_path / "b", models["image"], LABELS)
    (bundle / "manifest.json").write_text(text, encoding="utf-8")
    with pytest.raises(ModelError):
        load_model_info(bundle)


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000])
def test_corrupt_embedded_tledge_json_is_a_model_error(models: dict[str, bytes], tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(with_embedded(models["image"], {"labels.txt": b"a\nb\nc\n", "tledge.json": content}))
    with pytest.raises(ModelError, match="tledge.json"):
        load_model_info(path)


def test_oversized_embedded_entry_is_not_inflated(models: dict[str, bytes]) -> None:
    """A zip bomb posing as labels.txt is skipped by its declared size, not decompressed."""
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("labels.txt", b"\n" * (MAX_EMBEDDED_BYTES + 1))
        archive.writestr("tledge.json", b"{}")
    packed = embedded_files(models["image"] + buffer.getvalue())
    assert packed == {"tledge.json": b"{}"}


def test_empty_folder_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="holds no manifest.json or model.tflite"):
        load_model_info(tmp_path)
    with pytest.raises(ModelError, match="not found"):
        load_model_info(tmp_path / "nothing.tflite")


# -- the same through the CLI: exit code 1, one clear line, no traceback ---------------------

@pytest.fixture()
def broken_models(models: dict[str, bytes], tmp_path: Path) -> dict[str, list[str]]:
    """name -> the `tledge predict` arguments before the image."""
    cases: dict[str, list[str]] = {}
    cut = tmp_path / "truncated.tflite"
    cut.write_bytes(models["image"][: len(models["image"]) // 2])
    cases["truncated"] = [str(cut)]
    tampered = write_bundle(tmp_path / "tampered", models["image"], LABELS)
    data = bytearray((tampered / "model.tflite").read_bytes())
    data[100] ^= 0xFF
    (tampered / "model.tflite").write_bytes(bytes(data))
    cases["sha256 mismatch"] = [str(tampered)]
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(models["image"])
    wrong_labels = tmp_path / "five.txt"
    wrong_labels.write_text("a\nb\nc\nd\ne\n", encoding="utf-8")
    cases["label count"] = [str(bare), "--labels", str(wrong_labels)]
    dense = tmp_path / "dense.tflite"
    dense.write_bytes(models["dense"])
    cases["not a classifier"] = [str(dense)]
    bad_manifest = write_bundle(tmp_path / "badmanifest", models["image"], LABELS)
    _rewrite_manifest(bad_manifest, MANIFEST_DAMAGE["model is a string"])
    cases["bad manifest"] = [str(bad_manifest)]
    return cases


EXPECTED_WORDS = {
    "truncated": "cannot be loaded",
    "sha256 mismatch": "sha256",
    "label count": "5 entries but the model has 3 outputs",
    "not a classifier": "not an image classifier",
    "bad manifest": "must be an object",
}


@pytest.mark.parametrize("case", sorted(EXPECTED_WORDS))
def test_predict_cli_reports_a_broken_model_with_exit_code_1(broken_models: dict[str, list[str]], photo: Path, case: str) -> None:
    from edge.cli import app

    result = CliRunner().invoke(app, ["predict", *broken_models[case], str(photo)])
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 1, output
    assert isinstance(result.exception, SystemExit)  # not an escaped exception
    assert "error:" in output and EXPECTED_WORDS[case] in output
    assert "Traceback" not in output


def test_predict_subprocess_on_a_truncated_model(broken_models: dict[str, list[str]], photo: Path) -> None:
    """The installed entry point, in a real process: exit 1, one message, no traceback."""
    code = "import sys; from edge.cli import main; sys.argv = ['tledge'] + sys.argv[1:]; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "predict", *broken_models["truncated"], str(photo)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    assert np.all([len(line) < 400 for line in result.stderr.splitlines()])
