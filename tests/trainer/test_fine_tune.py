"""Fine-tuning on cached activations, on tiny real Keras models (MobileNetV2 alpha 0.35, 48 px).

What is checked: the cut is at a real block boundary; the cached (float16) activations are
the full model's activations at the cut; a top trained on the cache gives what the same
weights give end to end; nothing below the cut (and no BatchNorm statistic) changes;
and the test split has no say in what is selected.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from edge.images import load_rgb  # noqa: E402
from edge.preprocess import resize_rgb  # noqa: E402
from trainer import cut as cut_lib  # noqa: E402
from trainer import model as model_lib  # noqa: E402
from trainer.activations import ActivationCache, activation_pass  # noqa: E402
from trainer.config import Backbone, CacheMode, FeatureEngine, FineTuneOptions, ModelOptions, WeightsKind, WeightsSpec  # noqa: E402
from trainer.dataset import scan  # noqa: E402
from trainer.features import CLEAN_VIEW, Job  # noqa: E402
from trainer.fine_tune import TopData, evaluate_top, fine_tune_top  # noqa: E402
from trainer.train import train  # noqa: E402

from train_helpers import colour_dataset, tiny_options  # noqa: E402

SIZE = 48  # pixels
POLICY = ModelOptions().resize
#: float16 storage: |a - f16(a)| <= 2^-11 |a|; 1e-3 of the largest activation bounds it.
F16_TOLERANCE = 1e-3
#: The top on float16 activations vs float32 end to end: float16 rounding carried through
#: a few blocks and the softmax.
PROBS_TOLERANCE = 2e-3


_CALIBRATED: dict[int, list[np.ndarray]] = {}


def _classifier(classes: int = 3, seed: int = 0):
    """A tiny MobileNetV2 whose BatchNorm statistics are set from data.

    With random weights and default statistics the activations shrink block after block
    (about 1e-10 at the top), below float16's range: the cache comparison would be empty.
    Setting each BatchNorm's moving mean/variance to its input's statistics on random
    images (in graph order) keeps every activation of order 1, as trained weights do.
    """
    import keras

    keras.utils.set_random_seed(seed)
    options = ModelOptions(alpha=0.35, image_size=SIZE, weights=WeightsSpec(WeightsKind.NONE))
    backbone = model_lib.build_backbone(options)
    if seed in _CALIBRATED:  # the same seed builds the same weights: reuse the statistics
        backbone.model.set_weights(_CALIBRATED[seed])
        return backbone, model_lib.build_classifier(backbone, options, classes)
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1.0, 1.0, (8, SIZE, SIZE, 3)).astype(np.float32)  # already scaled
    for layer in backbone.model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            x = np.asarray(keras.Model(backbone.model.input, layer.input)(images, training=False))
            layer.moving_mean.assign(x.mean(axis=(0, 1, 2)))
            layer.moving_variance.assign(x.var(axis=(0, 1, 2)) + 1e-3)
    _CALIBRATED[seed] = backbone.model.get_weights()
    return backbone, model_lib.build_classifier(backbone, options, classes)


def _images(root: Path) -> tuple[list, np.ndarray]:
    dataset = scan(root, seed=0)
    samples = [s for split in ("train", "val", "test") for s in dataset.splits[split]]
    pixels = np.stack([resize_rgb(load_rgb(s.path), (SIZE, SIZE), POLICY) for s in samples]).astype(np.float32)
    return samples, pixels


def _internal_activations(classifier, layer: str, pixels: np.ndarray) -> np.ndarray:
    """The full classifier's own tensor at `layer`, computed on its whole graph."""
    import keras

    backbone = classifier.get_layer(model_lib.BACKBONE_NAME)
    probe = keras.Model(backbone.input, [backbone.get_layer(layer).output, backbone.output])
    scaled = classifier.get_layer("scale_pixels")(pixels)
    inner, _ = probe(scaled, training=False)
    return np.asarray(inner)


def test_cuts_are_block_boundaries_top_first() -> None:
    backbone, classifier = _classifier()
    cuts = cut_lib.block_cuts(backbone.model, Backbone.MOBILENET_V2)
    cut_lib.split(classifier, cuts[2])  # the halves share layers: the graph seen must not change
    assert cut_lib.block_cuts(backbone.model, Backbone.MOBILENET_V2) == cuts
    assert [c.layer for c in cuts[:5]] == ["block_16_project_BN", "block_15_add", "block_14_add", "block_13_project_BN", "block_12_add"]
    assert [c.blocks for c in cuts] == list(range(1, len(cuts) + 1))
    # A residual block's project_BN is not a boundary: the add after it also reads the block's input.
    assert "block_15_project_BN" not in {c.layer for c in cuts}
    with pytest.raises(Exception, match="choose 1"):
        cut_lib.choose_cut(backbone.model, Backbone.MOBILENET_V2, len(cuts) + 1)


@pytest.mark.parametrize("blocks", [1, 3])
def test_cached_activations_equal_the_full_models(tmp_path: Path, blocks: int) -> None:
    root = colour_dataset(tmp_path / "d", {"a": 3, "b": 3, "c": 3}, size=40)
    backbone, classifier = _classifier()
    cut = cut_lib.choose_cut(backbone.model, Backbone.MOBILENET_V2, blocks)
    halves = cut_lib.split(classifier, cut)
    samples, pixels = _images(root)
    cache = ActivationCache(CacheMode.DISK, tmp_path / "cache", "k")
    jobs = [Job(s, (CLEAN_VIEW,)) for s in samples]
    acts, failures, stats, check = activation_pass(jobs, halves, classifier, cache, FeatureEngine.KERAS, tmp_path / "cache", "k", SIZE, ModelOptions().resize, 1)
    assert not failures and stats.views_computed == len(samples)
    assert check is not None and check.max_abs_diff <= check.tolerance  # top(cache) vs the full model's pooled features
    cached = np.stack([acts[(s.digest, CLEAN_VIEW)] for s in samples])
    assert cached.dtype == np.float16 and cached.shape[1:] == cut.shape
    reference = _internal_activations(classifier, cut.layer, pixels)
    scale = max(1.0, float(np.abs(reference).max()))
    assert np.max(np.abs(cached.astype(np.float32) - reference)) <= F16_TOLERANCE * scale
    # Read back from disk (a second run): the same arrays, nothing recomputed.
    again, _, stats2, check2 = activation_pass(jobs, halves, classifier, ActivationCache(CacheMode.DISK, tmp_path / "cache", "k"), FeatureEngine.KERAS, tmp_path / "cache", "k", SIZE, ModelOptions().resize, 1)
    assert stats2.views_cached == len(samples) and stats2.views_computed == 0 and check2 is None
    assert all(np.array_equal(again[k], acts[k]) for k in acts)


def _fine_tuned(tmp_path: Path):
    root = colour_dataset(tmp_path / "d", {"a": 6, "b": 6, "c": 6}, size=40)
    backbone, classifier = _classifier()
    halves = cut_lib.split(classifier, cut_lib.choose_cut(backbone.model, Backbone.MOBILENET_V2, 2))
    samples, pixels = _images(root)
    acts = np.asarray(halves.bottom(pixels, training=False)).astype(np.float16)
    y = np.array([s.label for s in samples])
    before = [w.numpy() for w in classifier.weights]
    names = [w.path for w in classifier.weights]
    info = fine_tune_top(halves, TopData(acts, y), TopData(acts[:6], y[:6]), 3, FineTuneOptions(blocks=2, epochs=2, patience=5, learning_rate=1e-2, warmup_epochs=0.5, batch_size=4), seed=0)
    # patience > epochs and a high rate: both epochs run; whichever is best is restored
    assert info["epochs_run"] == 2
    return classifier, halves, acts, pixels, before, names, info


def test_top_trained_on_the_cache_equals_the_same_weights_end_to_end(tmp_path: Path) -> None:
    classifier, halves, acts, pixels, before, _, info = _fine_tuned(tmp_path)
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, classifier.weights)]
    if info["best_epoch"] == 0:
        pytest.fail("no fine-tuned epoch was kept; the comparison would test the untrained model")
    assert any(changed)
    on_cache = np.asarray(halves.top(acts.astype(np.float32), training=False))
    end_to_end = np.asarray(classifier(pixels, training=False))
    assert np.max(np.abs(on_cache - end_to_end)) <= PROBS_TOLERANCE
    assert np.array_equal(on_cache.argmax(1), end_to_end.argmax(1))


def test_fine_tuning_changes_nothing_below_the_cut_and_no_batchnorm_statistic(tmp_path: Path) -> None:
    import keras

    classifier, halves, _, _, before, names, info = _fine_tuned(tmp_path)
    backbone = classifier.get_layer(model_lib.BACKBONE_NAME)
    above = {w.path for layer in halves.top_backbone.layers for w in layer.weights}
    bn = {w.path for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization) for w in layer.weights}
    after = {w.path: w.numpy() for w in classifier.weights}
    old = dict(zip(names, before))
    for name in names:
        if name in bn or name not in above and name.startswith(backbone.name):
            assert np.array_equal(old[name], after[name]), f"{name} changed"
    assert any(not np.array_equal(old[n], after[n]) for n in above - bn), "no weight above the cut was trained"
    assert info["layers_unfrozen"] > 0
    assert not any(w.trainable for layer in halves.top_backbone.layers for w in layer.weights)  # frozen again


def _presplit(root: Path, test_seed: int) -> Path:
    """train/val/test folders; only the test images depend on `test_seed`."""
    colour_dataset(root / "train", {"a": 8, "b": 8, "c": 8}, size=40, seed=1)
    colour_dataset(root / "val", {"a": 3, "b": 3, "c": 3}, size=40, seed=2)
    colour_dataset(root / "test", {"a": 3, "b": 3, "c": 3}, size=40, seed=test_seed)
    if test_seed % 2:  # and with different labels: class folders swapped
        (root / "test" / "a").rename(root / "test" / "x")
        (root / "test" / "b").rename(root / "test" / "a")
        (root / "test" / "x").rename(root / "test" / "b")
    return root


def test_the_test_split_has_no_say_in_selection(tmp_path: Path) -> None:
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    fine = FineTuneOptions(blocks=1, epochs=3, patience=1, augment_views=1)
    results = []
    for test_seed in (3, 4):  # other test images, and with swapped labels (odd seed)
        root = _presplit(tmp_path / f"d{test_seed}", test_seed)
        options = tiny_options(root, tmp_path / f"runs{test_seed}", fine_tune=fine)
        results.append(train(replace(options, model=replace(options.model, image_size=SIZE))))
    for other in results[1:]:
        first = results[0]
        assert other.metrics["fine_tune"]["best_epoch"] == first.metrics["fine_tune"]["best_epoch"]
        assert other.metrics["fine_tune"]["kept"] == first.metrics["fine_tune"]["kept"]
        assert other.metrics["head"] == first.metrics["head"]
        assert other.metrics["val"] == first.metrics["val"]
        assert [(r.get("loss"), r.get("val_loss")) for r in _history(other)] == [(r.get("loss"), r.get("val_loss")) for r in _history(first)]
    assert results[0].metrics["test"]["accuracy_interval"]["n"] == 9


def _history(result) -> list[dict]:
    import csv

    with (result.run_dir / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_train_with_fine_tune_writes_intervals_and_saves_the_tuned_model(tmp_path: Path) -> None:
    import keras

    root = colour_dataset(tmp_path / "d", {"a": 12, "b": 12, "c": 12}, size=40)
    options = tiny_options(root, tmp_path / "runs", split=(0.25, 0.25), fine_tune=FineTuneOptions(blocks=2, epochs=2, augment_views=1))
    result = train(replace(options, model=replace(options.model, image_size=SIZE)))
    info = result.metrics["fine_tune"]
    assert info["ran"] and info["blocks"] == 2 and info["cut_layer"] == "block_15_add"
    assert info["cut_check"]["max_abs_diff"] <= info["cut_check"]["tolerance"]
    summary = json.loads((result.run_dir / "summary.json").read_text())
    for split in ("val", "test"):
        interval = summary[f"{split}_interval"]
        assert interval["method"] == "wilson" and interval["n"] == 9 and interval["low"] <= interval["value"] <= interval["high"]
    # The saved model is the selected one: its end-to-end val accuracy is the one reported.
    model = keras.saving.load_model(result.run_dir / "model.keras", compile=False)
    dataset = scan(root, 0.25, 0.25, seed=0)
    val = dataset.splits["val"]
    pixels = np.stack([resize_rgb(load_rgb(s.path), (SIZE, SIZE), POLICY) for s in val]).astype(np.float32)
    accuracy = float(np.mean(np.argmax(model(pixels), 1) == np.array([s.label for s in val])))
    assert accuracy == pytest.approx(result.metrics["val"]["accuracy"], abs=1e-4)


def test_weak_val_and_test_warn_and_headline_the_kfold_estimate(tmp_path: Path) -> None:
    root = colour_dataset(tmp_path / "d", {"a": 10, "b": 10, "c": 10}, size=40)
    result = train(tiny_options(root, tmp_path / "runs", split=(0.2, 0.2)))
    assert set(result.metrics["weak_estimate"]["splits"]) == {"val", "test"}
    assert any("weak estimate" in w and w.startswith("val") for w in result.warnings)
    assert any("k-fold out-of-fold" in w for w in result.warnings)
    head = result.summary["headline"]
    assert head["source"] == "kfold" and head["interval"]["n"] == 24  # every train+val image, out of fold
    assert result.summary["val_interval"]["n"] == 6


def test_cli_fine_tune_accepts_blocks_or_auto_only() -> None:
    assert FineTuneOptions.parse_blocks("auto") is None
    assert FineTuneOptions.parse_blocks(" 3 ") == 3
    assert FineTuneOptions.parse_blocks("0") == 0 and not FineTuneOptions(blocks=0).enabled
    with pytest.raises(ValueError, match="auto"):
        FineTuneOptions.parse_blocks("-2")
    assert FineTuneOptions(blocks=None).enabled


def test_cli_rejects_a_fine_tune_value_that_is_neither_blocks_nor_auto(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge.cli import app

    root = colour_dataset(tmp_path / "d", {"a": 2, "b": 2})
    result = CliRunner().invoke(app, ["train", str(root), "--fine-tune", "top"])
    assert result.exit_code == 2
    assert "auto" in result.output and "Traceback" not in result.output
