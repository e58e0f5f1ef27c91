"""Backbone registry, weights resolution, scaling inside the graph, the head's training
rules (class weights, label smoothing, early stopping), augmentation, MirroredStrategy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tledge_paths import ROOT
from edge.errors import ModelError
from trainer.errors import WeightsError
from train_helpers import tiny_options
from trainer import model as model_lib
from trainer.config import Backbone, ModelOptions, WeightsKind, WeightsSpec
from trainer.features import augment, render_views, view_names


def test_weights_resolution_order_flag_then_env_then_imagenet(tmp_path: Path) -> None:
    env = {"TLEDGE_WEIGHTS": str(tmp_path / "w.h5")}
    assert WeightsSpec.parse("none", env).kind is WeightsKind.NONE
    assert WeightsSpec.parse("IMAGENET", env).kind is WeightsKind.IMAGENET
    assert WeightsSpec.parse("/x/y.h5", env) == WeightsSpec(WeightsKind.FILE, Path("/x/y.h5"))
    assert WeightsSpec.parse(None, env) == WeightsSpec(WeightsKind.FILE, tmp_path / "w.h5", origin="env")
    assert WeightsSpec.parse(None, {}).kind is WeightsKind.IMAGENET


def test_offline_imagenet_failure_says_how_to_fix_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # empty cache: Keras must download
    monkeypatch.setattr(model_lib, "_construct", _offline(model_lib._construct))  # ... and cannot
    options = ModelOptions(alpha=0.35, image_size=96, weights=WeightsSpec(WeightsKind.IMAGENET))
    with pytest.raises(WeightsError) as info:
        model_lib.build_backbone(options)
    message = str(info.value)
    assert "cannot obtain the ImageNet weights" in message
    assert "--weights" in message and "TLEDGE_WEIGHTS" in message and str(tmp_path / "keras" / "models") in message
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5" in message


def test_random_backbone_escape_hatch_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_dataset: Path) -> None:
    from dataclasses import replace

    from trainer.train import train

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(model_lib, "_construct", _offline(model_lib._construct))
    options = tiny_options(synthetic_dataset, tmp_path / "runs")
    options = replace(options, model=replace(options.model, weights=WeightsSpec(WeightsKind.IMAGENET), allow_random_backbone=True))
    result = train(options)
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["backbone"]["weights"] == "random (imagenet unavailable)"
    assert any("RANDOM BACKBONE" in w for w in result.summary["warnings"])


def _offline(construct):  # type: ignore[no-untyped-def]
    """Keras' constructor with the download failing as it does offline (no network here is guaranteed)."""

    def wrapped(spec, options, weights):  # type: ignore[no-untyped-def]
        if weights == "imagenet":
            raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -2] Name or service not known")
        return construct(spec, options, weights)

    return wrapped


def test_missing_or_mismatched_weights_file_is_a_weights_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        model_lib.build_backbone(ModelOptions(alpha=0.35, image_size=48, weights=WeightsSpec(WeightsKind.FILE, tmp_path / "nope.h5")))
    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"not hdf5")
    with pytest.raises(WeightsError, match="does not fit"):
        model_lib.build_backbone(ModelOptions(alpha=0.35, image_size=48, weights=WeightsSpec(WeightsKind.FILE, bogus)))


def test_options_out_of_range_are_model_errors() -> None:
    with pytest.raises(ModelError, match="alpha"):
        model_lib.check_options(ModelOptions(alpha=2.0))
    with pytest.raises(ModelError, match="image-size"):
        model_lib.check_options(ModelOptions(image_size=16))
    with pytest.raises(ModelError, match="width multiplier"):
        model_lib.check_options(ModelOptions(backbone=Backbone.RESNET50, alpha=0.5))


@pytest.mark.parametrize("backbone", list(Backbone))
def test_scaling_inside_the_graph_matches_keras_preprocess_input(backbone: Backbone) -> None:
    import keras

    reference = {
        Backbone.MOBILENET_V2: keras.applications.mobilenet_v2.preprocess_input,
        Backbone.RESNET50: keras.applications.resnet50.preprocess_input,
    }[backbone]
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    layer = model_lib.scaling_layer(model_lib.REGISTRY[backbone])
    np.testing.assert_allclose(np.asarray(layer(pixels)), reference(pixels.copy()), atol=1e-4)


def test_classifier_takes_raw_pixels_and_backbone_is_frozen() -> None:
    options = ModelOptions(alpha=0.35, image_size=48, weights=WeightsSpec(WeightsKind.NONE))
    built = model_lib.build_backbone(options)
    clf = model_lib.build_classifier(built, options, 3)
    assert clf.layers[1].name == "scale_pixels"
    assert clf.get_layer("backbone").trainable is False
    trainable = {w.path.split("/")[0] for w in clf.trainable_weights}
    assert trainable == {"probs"}


def test_unfreeze_top_leaves_batchnorm_frozen() -> None:
    import keras

    options = ModelOptions(alpha=0.35, image_size=48, weights=WeightsSpec(WeightsKind.NONE))
    clf = model_lib.build_classifier(model_lib.build_backbone(options), options, 3)
    unfrozen = model_lib.unfreeze_top(clf, 10)
    backbone = clf.get_layer("backbone")
    bn = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and not any(layer.trainable for layer in bn)
    assert 1 <= unfrozen < 10  # the top 10 weighted layers include BatchNorm, which stay frozen
    assert sum(layer.trainable for layer in backbone.layers) == unfrozen


def test_mobilenet_file_for_224_serves_other_sizes_and_keras_cache(imagenet_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = model_lib.build_backbone(ModelOptions(image_size=224, weights=WeightsSpec(WeightsKind.FILE, imagenet_weights)))
    for size in (96, 160):
        built = model_lib.build_backbone(ModelOptions(image_size=size, weights=WeightsSpec(WeightsKind.FILE, imagenet_weights)))
        assert built.digest == reference.digest  # same weights at every input size
    models = tmp_path / "keras" / "models"
    models.mkdir(parents=True)
    (models / imagenet_weights.name).symlink_to(imagenet_weights)  # Keras' cache holds only the 224 file
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    cached = model_lib.build_backbone(ModelOptions(image_size=128, weights=WeightsSpec(WeightsKind.IMAGENET)))
    assert cached.weights == "imagenet" and cached.digest == reference.digest
    with pytest.raises(WeightsError, match="alpha 0.5"):
        model_lib.build_backbone(ModelOptions(alpha=0.5, image_size=96, weights=WeightsSpec(WeightsKind.FILE, imagenet_weights)))


# -- the head's training rules, on crafted features (milliseconds per epoch) --------------


def _rows(x: np.ndarray, y: np.ndarray):  # type: ignore[no-untyped-def]
    from trainer.features.training import FeatureRows

    return FeatureRows(x.astype(np.float32), y, np.arange(len(y)), np.ones(len(y), dtype=bool))


def _fit(tmp_path: Path, train_xy, val_xy, **hyper):  # type: ignore[no-untyped-def]
    from trainer.head import fit_head
    from trainer.progress import Reporter

    options = tiny_options(tmp_path, tmp_path, **hyper)
    rows = {"train": _rows(*train_xy), "val": _rows(*val_xy), "test": _rows(*val_xy)}
    return fit_head(options, rows, 2, Reporter(quiet=True))


def _separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(0, 0.3, (n, 8))
    x[:, 0] += np.where(y == 1, 2.0, -2.0)
    return x, y


def test_early_stopping_restores_the_best_epoch(tmp_path: Path) -> None:
    x, y = _separable(64, 0)
    fitted = _fit(tmp_path, (x, y), (x[:16], 1 - y[:16]), epochs=30, patience=2, learning_rate=0.05)  # val labels flipped
    head, info = fitted.head, fitted.info
    assert info["stopped_early"] and info["epochs_run"] == info["best_epoch"] + 2
    val_losses = [row["val_loss"] for row in fitted.history]
    from trainer.head import loss_and_gradients

    restored, *_ = loss_and_gradients(head, x[:16].astype(np.float32), np.eye(2, dtype=np.float32)[1 - y[:16]], np.ones(16, np.float32))
    assert restored == pytest.approx(min(val_losses), rel=1e-4)


def test_label_smoothing_caps_confidence(tmp_path: Path) -> None:
    x, y = _separable(64, 1)
    sharp = _fit(tmp_path, (x, y), (x, y), epochs=60, label_smoothing=0.0, learning_rate=0.05, patience=60).head
    smooth = _fit(tmp_path, (x, y), (x, y), epochs=60, label_smoothing=0.4, learning_rate=0.05, patience=60).head
    top_sharp = sharp.predict(x.astype(np.float32)).max(axis=1).mean()
    top_smooth = smooth.predict(x.astype(np.float32)).max(axis=1).mean()
    assert top_sharp > 0.97 and top_smooth < 0.9  # smoothing 0.4 targets 0.8 for 2 classes


def test_class_weights_balance_the_classes() -> None:
    from trainer.head import class_weights

    weights = class_weights(np.array([0] * 90 + [1] * 10), 2)
    assert weights[0] * 90 == pytest.approx(weights[1] * 10)
    assert weights == pytest.approx({0: 100 / 180, 1: 100 / 20})


def test_class_weights_lift_the_minority_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    y = np.array([0] * 95 + [1] * 5)
    x = rng.normal(0, 1.0, (100, 8))
    x[:, 0] += np.where(y == 1, 1.0, -1.0)  # overlapping classes: the prior matters
    probe = np.zeros((1, 8))
    plain = _fit(tmp_path, (x, y), (x, y), epochs=150, class_weights=False, learning_rate=0.05, patience=150).head
    balanced = _fit(tmp_path, (x, y), (x, y), epochs=150, class_weights=True, learning_rate=0.05, patience=150).head
    p_plain = plain.predict(probe.astype(np.float32))[0, 1]
    p_balanced = balanced.predict(probe.astype(np.float32))[0, 1]
    print(p_plain, p_balanced)
    assert p_balanced > 1.6 * p_plain


def test_augmented_views_are_deterministic_and_differ() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    names = view_names(3, seed=7)
    assert names[0] == "clean" and len(set(names)) == 4
    first = render_views(rgb, 32, "center_crop", names, "digest")
    again = render_views(rgb, 32, "center_crop", names, "digest")
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(v.shape == (32, 32, 3) and v.dtype == np.uint8 for v in first)
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    flipped = augment(np.tile(np.arange(32, dtype=np.uint8)[None, :, None], (32, 1, 3)), np.random.default_rng(1))
    assert flipped.shape == (32, 32, 3)


def test_mirrored_strategy_on_two_logical_cpus(synthetic_dataset: Path, tmp_path: Path) -> None:
    code = f"""
        import json, sys
        sys.path.insert(0, {str(ROOT / 'tests' / 'trainer')!r})
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from dataclasses import replace
        from pathlib import Path
        from train_helpers import tiny_options
        from trainer.config import Distribute
        from trainer.train import train
        options = tiny_options(Path({str(synthetic_dataset)!r}), Path({str(tmp_path)!r}), epochs=2)
        result = train(replace(options, runtime=replace(options.runtime, distribute=Distribute.MIRRORED)))
        auto = train(replace(options, runtime=replace(options.runtime, distribute=Distribute.AUTO)))
        print(json.dumps([result.metrics["distribute"], auto.metrics["distribute"], result.metrics["head"]["epochs_run"]]))
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mirrored, auto, epochs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert mirrored == {"strategy": "MirroredStrategy", "replicas": 2}
    assert auto["replicas"] == 1  # no accelerators: the default strategy
    assert epochs == 2


def test_resnet50_builds_with_caffe_scaling_inside() -> None:
    options = ModelOptions(backbone=Backbone.RESNET50, image_size=32, weights=WeightsSpec(WeightsKind.NONE))
    clf = model_lib.build_classifier(model_lib.build_backbone(options), options, 2)
    assert tuple(clf.output_shape) == (None, 2)
    assert clf.get_layer("scale_pixels").trainable is False


@pytest.mark.slow
def test_real_weights_tflite_features_match_keras_and_the_head_learns(imagenet_weights: Path, synthetic_dataset: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from trainer.config import FeatureEngine
    from trainer.train import train

    options = tiny_options(synthetic_dataset, tmp_path / "runs", cache_dir=tmp_path / "cache", epochs=30, augment_views=0)
    options = replace(
        options,
        model=replace(options.model, alpha=1.0, image_size=96, weights=WeightsSpec(WeightsKind.FILE, imagenet_weights)),
        runtime=replace(options.runtime, engine=FeatureEngine.AUTO),
    )
    result = train(options)
    features = result.metrics["features"]
    assert features["engine"] == "tflite"  # the fast path was checked and chosen
    assert 0 < features["tflite_vs_keras_max_abs_diff"] < 1e-3
    assert result.val_accuracy is not None and result.val_accuracy >= 0.5  # 4 classes: chance is 0.25
