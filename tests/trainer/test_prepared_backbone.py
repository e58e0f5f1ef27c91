"""A run on weights a previous run has seen computes its features on the cached TFLite
backbone in a process of its own (trainer.features.prepared, trainer.features.worker) and
writes model.keras from the classifier that run saved (trainer.keras_file), without
TensorFlow. Its results are those of the ordinary path."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from train_helpers import colour_dataset, tiny_options

from trainer.config import CacheMode, FeatureEngine, TrainOptions, WeightsKind, WeightsSpec
from trainer.features.prepared import prepared_backbone
from trainer.train import train


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A no-top weights file for the tiny backbone (random weights, saved like ImageNet's)."""
    import keras

    path = tmp_path_factory.mktemp("weights") / "tiny_no_top.weights.h5"
    keras.utils.set_random_seed(3)
    keras.applications.MobileNetV2(input_shape=(48, 48, 3), alpha=0.35, include_top=False, weights=None).save_weights(str(path))
    return path


def options_for(tmp_path: Path, weights: Path, out: str) -> TrainOptions:
    data = tmp_path / "data"
    if not data.is_dir():
        colour_dataset(data, {"red": 10, "green": 10, "blue": 10})
    options = tiny_options(data, tmp_path / out, cache_dir=tmp_path / "cache", split=(0.3, 0.0), epochs=3)
    return replace(
        options,
        model=replace(options.model, weights=WeightsSpec(WeightsKind.FILE, weights)),
        runtime=replace(options.runtime, engine=FeatureEngine.AUTO),
    )


THREADS = os.cpu_count() or 1  # train()'s default thread count: the engine choice is kept per count


def pin_tflite_choice(cache: Path) -> None:
    """Make the cached engine choice TFLite (on a machine where the tiny model ran faster
    on Keras, AUTO chose Keras, and nothing would be prepared)."""
    for path in (cache / "backbones").glob("*.engine-t*.json"):
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "engine": "tflite"}))


def first_run_on_tflite(options: TrainOptions, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A first run whose features the TFLite engine computed (again, with the choice pinned,
    where AUTO chose Keras), the feature cache emptied after it: the next run is prepared."""
    first = train(options)
    pin_tflite_choice(tmp_path / "cache")
    shutil.rmtree(tmp_path / "cache" / "features")
    if json.loads((first.run_dir / "metrics.json").read_text())["features"]["engine"] != "tflite":
        first = train(replace(options, out_dir=tmp_path / "runs1"))  # the same engine on both sides
        shutil.rmtree(tmp_path / "cache" / "features")
    return first


def run_outputs(run_dir: Path) -> tuple[dict, list[str], np.ndarray]:
    import keras

    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = (run_dir / "history.csv").read_text().splitlines()
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 48, 48, 3)).astype(np.float32)
    return metrics, history, model.predict(pixels, verbose=0)


def test_a_second_run_takes_the_prepared_path_with_the_same_results(tmp_path: Path, weights_file: Path) -> None:
    options = options_for(tmp_path, weights_file, "runs")
    assert prepared_backbone(options, 2, 4) is None  # nothing cached yet
    first = train(options)
    if json.loads((first.run_dir / "metrics.json").read_text())["features"]["engine"] != "tflite":
        # AUTO chose Keras here: pin TFLite and run the ordinary path again, so that both
        # runs compared below computed their features on the same engine.
        pin_tflite_choice(tmp_path / "cache")
        shutil.rmtree(tmp_path / "cache" / "features")
        for record in (tmp_path / "cache" / "backbones" / "sources").glob("*.json"):
            record.unlink()
        first = train(replace(options, out_dir=tmp_path / "runs1"))
    first_metrics, first_history, first_probs = run_outputs(first.run_dir)
    assert first_metrics["features"]["engine"] == "tflite" and not first_metrics["features"]["in_worker"]
    assert prepared_backbone(options, THREADS, 4) is not None

    # A cold feature cache (it would otherwise answer everything), the same backbone records.
    shutil.rmtree(tmp_path / "cache" / "features")
    second = train(replace(options, out_dir=tmp_path / "runs2"))
    second_metrics, second_history, second_probs = run_outputs(second.run_dir)
    assert second_metrics["features"]["in_worker"]
    assert second.model is None and "build_s" not in second_metrics["timings"]  # written from the template, nothing built
    assert second_metrics["features"]["views_computed"] == first_metrics["features"]["views_computed"] > 0
    assert second_metrics["features"]["engine"] == "tflite"
    assert second_history == first_history
    assert second_metrics["val"] == first_metrics["val"]
    np.testing.assert_array_equal(second_probs, first_probs)


def test_a_record_that_does_not_match_the_built_backbone_is_dropped(tmp_path: Path, weights_file: Path) -> None:
    options = options_for(tmp_path, weights_file, "runs")
    train(options)
    pin_tflite_choice(tmp_path / "cache")
    records = list((tmp_path / "cache" / "backbones" / "sources").glob("*.json"))
    assert len(records) == 1
    # A record pointing at another backbone's converted copy: here, the same copy under a
    # wrong digest, so that the prepared path runs and the built digest disagrees.
    real = json.loads(records[0].read_text())["digest"]
    backbones = tmp_path / "cache" / "backbones"
    from trainer.features.cache import model_key

    m = options.model
    right, wrong = (model_key(m.backbone.value, m.alpha, m.image_size, m.resize.value, d) for d in (real, "0" * 64))
    (backbones / f"{wrong}.tflite").write_bytes((backbones / f"{right}.tflite").read_bytes())
    for choice in backbones.glob(f"{right}.engine-t*.json"):
        (backbones / choice.name.replace(right, wrong)).write_bytes(choice.read_bytes())
    records[0].write_text(json.dumps({"digest": "0" * 64}))

    shutil.rmtree(tmp_path / "cache" / "features")
    second = train(replace(options, out_dir=tmp_path / "runs2"))
    assert any("did not match" in w for w in second.warnings)
    assert json.loads(records[0].read_text())["digest"] == real  # written again by the ordinary path
    assert not json.loads((second.run_dir / "metrics.json").read_text())["features"]["in_worker"]  # the ordinary path


def test_random_weights_an_engine_named_and_a_memory_cache_are_never_prepared(tmp_path: Path, weights_file: Path) -> None:
    options = options_for(tmp_path, weights_file, "runs")
    train(options)
    pin_tflite_choice(tmp_path / "cache")
    assert prepared_backbone(options, THREADS, 4) is not None
    assert prepared_backbone(replace(options, model=replace(options.model, weights=WeightsSpec(WeightsKind.NONE))), THREADS, 4) is None
    for engine in (FeatureEngine.KERAS, FeatureEngine.TFLITE):
        assert prepared_backbone(replace(options, runtime=replace(options.runtime, engine=engine)), THREADS, 4) is None
    assert prepared_backbone(replace(options, runtime=replace(options.runtime, cache=CacheMode.MEMORY)), THREADS, 4) is None


def test_a_worker_that_cannot_hand_the_features_over_leaves_them_to_the_run(tmp_path: Path, weights_file: Path) -> None:
    """The worker hands the features over through the disk cache; where that cache cannot
    be written it fails, and the run computes them itself (in memory, as always when the
    cache is not writable) with the same result."""
    options = options_for(tmp_path, weights_file, "runs")
    first = first_run_on_tflite(options, tmp_path)
    (tmp_path / "cache" / "features").write_text("not a folder")  # no feature can be written under it

    second = train(replace(options, out_dir=tmp_path / "runs2"))
    assert any("feature worker did not finish" in w for w in second.warnings)
    assert any("not writable" in w for w in second.warnings)
    assert not json.loads((second.run_dir / "metrics.json").read_text())["features"]["in_worker"]
    assert (second.run_dir / "history.csv").read_text() == (first.run_dir / "history.csv").read_text()


def _second_run_in_a_fresh_process(tmp_path: Path, weights: Path) -> dict:
    """train() of `options_for(tmp_path, weights, "runs3")` in a new interpreter: which
    heavy modules it imported and what it warned."""
    import subprocess
    import sys
    import textwrap

    from tledge_paths import ROOT

    code = f"""
        import json, sys
        sys.path.insert(0, {str(ROOT / 'tests' / 'trainer')!r})
        from pathlib import Path
        from test_prepared_backbone import options_for
        from trainer.train import train
        result = train(options_for(Path({str(tmp_path)!r}), Path({str(weights)!r}), "runs3"))
        print(json.dumps({{"tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules,
                          "run": str(result.run_dir), "warnings": list(result.warnings)}}))
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_run_on_a_converted_backbone_with_a_saved_classifier_imports_no_tensorflow(tmp_path: Path, weights_file: Path) -> None:
    options = options_for(tmp_path, weights_file, "runs")
    first = first_run_on_tflite(options, tmp_path)
    assert list((tmp_path / "cache" / "backbones").glob("*.classifier-*.keras"))  # the template the first run kept

    seen = _second_run_in_a_fresh_process(tmp_path, weights_file)
    assert not seen["tensorflow"] and not seen["keras"], seen
    _, first_history, first_probs = run_outputs(first.run_dir)
    second_metrics, second_history, second_probs = run_outputs(Path(seen["run"]))
    assert second_metrics["features"]["in_worker"] and second_history == first_history
    np.testing.assert_array_equal(second_probs, first_probs)


def test_a_damaged_template_is_dropped_and_keras_saves_the_model(tmp_path: Path, weights_file: Path) -> None:
    options = options_for(tmp_path, weights_file, "runs")
    first = train(options)
    pin_tflite_choice(tmp_path / "cache")
    if json.loads((first.run_dir / "metrics.json").read_text())["features"]["engine"] != "tflite":
        first = train(replace(options, out_dir=tmp_path / "runs1"))
    (template,) = (tmp_path / "cache" / "backbones").glob("*.classifier-*.keras")
    template.write_bytes(b"not a zip archive")

    second = train(replace(options, out_dir=tmp_path / "runs2"))
    assert any("cached classifier could not be used" in w for w in second.warnings)
    np.testing.assert_array_equal(run_outputs(second.run_dir)[2], run_outputs(first.run_dir)[2])
    assert not template.exists()  # dropped; the next Keras save keeps a sound one
