"""The bundle: standard TFLite metadata that other tools read, exact labels, safe writing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from export_helpers import UNICODE_LABELS
from edge.bundle import embedded_files, load_model_info, parse_labels, read_labels
from edge.classifier import Classifier
from trainer.errors import ExportError
from edge.images import load_rgb


def _test_images(run_dir: Path, count: int) -> list[tuple[str, int]]:
    return json.loads((run_dir / "splits.json").read_text(encoding="utf-8"))["test"][:count]


def _mediapipe_top(model_path: Path, frames: list[np.ndarray]) -> list[tuple[int, str]]:
    """(index, category name) of MediaPipe Tasks' ImageClassifier's best class per frame."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(model_path)), max_results=2)
    tops = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for frame in frames:
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame)))
            best = result.classifications[0].categories[0]
            tops.append((best.index, best.category_name))
    return tops


@pytest.mark.parametrize("key", ["int8", "float32"])
def test_mediapipe_image_classifier_shows_class_names(export_once, trained_run, key):
    result = export_once(key)
    items = _test_images(trained_run, 12)
    frames = [load_rgb(path) for path, _ in items]
    tops = _mediapipe_top(result.model_path, frames)
    labels = ("circle", "square", "triangle", "stripes")
    assert all(name == labels[index] for index, name in tops), tops
    # Same file, same pixels (48 px images need no resize): same answer as the edge runtime,
    # wherever the best class is not a near-tie (two runtimes may round differently).
    ours = Classifier(load_model_info(result.bundle_dir), threads=1)
    compared = 0
    for (_, name), frame in zip(tops, frames):
        prediction = ours.classify(frame, top_k=2)
        if prediction.top[0][2] - prediction.top[1][2] > 0.01:
            assert name == prediction.label
            compared += 1
    assert compared >= 6


def _metadata(model_bytes: bytes):
    from mediapipe.tasks.metadata import metadata_schema_py_generated as md_fb
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(model_bytes, 0)
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name() == b"TFLITE_METADATA":
            data = model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes()
            assert md_fb.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0)
            return md_fb.ModelMetadataT.InitFromObj(md_fb.ModelMetadata.GetRootAsModelMetadata(data, 0)), md_fb
    raise AssertionError("no TFLITE_METADATA in the model")


def test_standard_metadata_fields(export_once):
    meta, md_fb = _metadata(export_once("int8").model_path.read_bytes())
    assert meta.minParserVersion == b"1.0.0" and meta.name == b"tiny" and meta.version == b"0.1.0"
    graph = meta.subgraphMetadata[0]
    image, score = graph.inputTensorMetadata[0], graph.outputTensorMetadata[0]
    assert image.content.contentPropertiesType == md_fb.ContentProperties.ImageProperties
    assert image.content.contentProperties.colorSpace == md_fb.ColorSpaceType.RGB
    norm = image.processUnits[0].options
    assert list(norm.mean) == [0.0] and list(norm.std) == [1.0]  # raw pixels in
    assert [(f.name, f.type) for f in score.associatedFiles] == [(b"labels.txt", md_fb.AssociatedFileType.TENSOR_AXIS_LABELS)]
    assert [(f.name, f.type) for f in meta.associatedFiles] == [(b"tledge.json", md_fb.AssociatedFileType.DESCRIPTIONS)]


@pytest.fixture(scope="module")
def unicode_bundle(unicode_run, tmp_path_factory):
    from trainer.export import ExportOptions, export

    return export(unicode_run, ExportOptions.for_float32(out=tmp_path_factory.mktemp("uni") / "unicode", accept_drop=True))


def test_unicode_labels_round_trip_exactly(unicode_bundle, unicode_run):
    assert len(UNICODE_LABELS) >= 10
    labels_file = unicode_bundle.labels_path
    assert labels_file.read_bytes() == ("\n".join(UNICODE_LABELS) + "\n").encode("utf-8")
    assert read_labels(labels_file) == UNICODE_LABELS
    model_bytes = unicode_bundle.model_path.read_bytes()
    packed = embedded_files(model_bytes)
    assert parse_labels(packed["labels.txt"].decode("utf-8"), "embedded") == UNICODE_LABELS
    assert tuple(json.loads(packed["tledge.json"])["labels"]) == UNICODE_LABELS
    assert tuple(json.loads(unicode_bundle.manifest_path.read_text(encoding="utf-8"))["labels"]) == UNICODE_LABELS
    assert load_model_info(unicode_bundle.bundle_dir).labels == UNICODE_LABELS
    bare = unicode_bundle.bundle_dir.parent / "copied.tflite"  # a lone .tflite carries them too
    shutil.copy(unicode_bundle.model_path, bare)
    assert load_model_info(bare).labels == UNICODE_LABELS
    tops = _mediapipe_top(unicode_bundle.model_path, [load_rgb(p) for p, _ in _test_images(unicode_run, 11)])
    assert all(name == UNICODE_LABELS[index] for index, name in tops), tops


def _copy_bundle(bundle: Path, where: Path) -> Path:
    copy = where / "bundle"
    shutil.copytree(bundle, copy)
    (copy / "marker.txt").write_text("old bundle", encoding="utf-8")
    return copy


def test_existing_bundle_is_not_overwritten_without_force(unicode_bundle, unicode_run, tmp_path):
    from trainer.export import ExportOptions, export

    target = _copy_bundle(unicode_bundle.bundle_dir, tmp_path)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(ExportError, match="--force"):
        export(unicode_run, ExportOptions.for_float32(out=target))
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before


def test_force_replaces_the_bundle(unicode_bundle, unicode_run, tmp_path):
    from trainer.export import ExportOptions, export

    target = _copy_bundle(unicode_bundle.bundle_dir, tmp_path)
    result = export(unicode_run, ExportOptions.for_float32(out=target, force=True, accept_drop=True))
    assert result.bundle_dir == target and not (target / "marker.txt").exists()
    assert load_model_info(target).labels == UNICODE_LABELS
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no staging or old copy left


def test_interrupted_export_leaves_no_partial_files_and_keeps_the_old_bundle(unicode_bundle, unicode_run, tmp_path, monkeypatch):
    import trainer.export.exporter as export_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while verifying: model.tflite is already staged

    monkeypatch.setattr(export_module, "verify", interrupted)
    target = _copy_bundle(unicode_bundle.bundle_dir, tmp_path)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(KeyboardInterrupt):
        export_module.export(unicode_run, export_module.ExportOptions.for_float32(out=target, force=True))
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        export_module.export(unicode_run, export_module.ExportOptions.for_float32(out=fresh))
    assert not fresh.exists() and [p.name for p in tmp_path.iterdir()] == ["bundle"]
