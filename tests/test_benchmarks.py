"""The benchmark scripts' own logic: multiply-adds counted from a real .tflite, the
paired pipeline ratios, and BENCHMARKS.md rendering (goals, kept sections)."""

from __future__ import annotations

import sys

import pytest

from tledge_paths import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

import bench_common  # noqa: E402
import bench_pipeline  # noqa: E402
import bench_report  # noqa: E402


def test_count_macs_matches_hand_count_of_a_converted_model() -> None:
    tf = pytest.importorskip("tensorflow")
    keras = tf.keras
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)  # 16*16*8 outputs x 3*3*3 taps
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 16*16*8 outputs x 3*3 taps
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4)(x)  # 4 outputs x 8 inputs
    model_bytes = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs)).convert()

    macs = bench_common.count_macs(model_bytes)

    assert macs == {"CONV_2D": 16 * 16 * 8 * 27, "DEPTHWISE_CONV_2D": 16 * 16 * 8 * 9, "FULLY_CONNECTED": 4 * 8}


def test_count_macs_of_googles_mobilenet_v2_is_the_published_300m(shared) -> None:
    model = shared / "models" / "mobilenet_v2_1.0_224_quant.tflite"
    total = sum(bench_common.count_macs(model.read_bytes()).values())
    assert 295e6 < total < 305e6  # the MobileNetV2 paper: 300M multiply-adds at 1.0 / 224


def test_percentile_interpolates() -> None:
    assert bench_common.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert bench_common.percentile([1.0, 2.0, 3.0], 90) == pytest.approx(2.8)


def _pipeline_row(tledge: list[float], naive: list[float], raw: list[float]) -> dict:
    return {
        "model": "m-int8", "mode": "int8", "threads": 1, "raw_invoke_fps": 100.0, "naive_fps": 80.0, "tledge_fps": 90.0,
        "tledge_stats_fps": 89.0, "tledge_vs_raw": 0.9, "tledge_vs_naive": 1.1, "raw_invoke_p50_ms": 10.0, "preprocess_ms": 1.0,
        "frames": 300, "tledge_command": "tledge run m --source v", "per_round": {"tledge": tledge, "naive": naive, "raw": raw},
    }


def test_pipeline_goals_use_ratios_paired_within_rounds() -> None:
    # The load swings between rounds, but within each round tledge beats the naive loop.
    row = _pipeline_row(tledge=[50.0, 110.0, 99.0], naive=[45.0, 100.0, 90.0], raw=[52.0, 112.0, 100.0])
    ratio, ahead, rounds = bench_pipeline.paired(row, "naive")
    assert (ahead, rounds) == (3, 3) and ratio == pytest.approx(1.1)
    by_goal = {g["goal"]: g["met"] for g in bench_pipeline.goals([row])}
    assert by_goal == {"tledge run >= 95% of the raw invoke rate": True, "tledge run faster than the naive loop": True}

    slower = _pipeline_row(tledge=[40.0, 90.0, 80.0], naive=[45.0, 100.0, 90.0], raw=[52.0, 112.0, 100.0])
    assert {g["goal"]: g["met"] for g in bench_pipeline.goals([slower])} == {
        "tledge run >= 95% of the raw invoke rate": False, "tledge run faster than the naive loop": False}


def _startup(tledge_s: float) -> dict:
    rows = [
        {"variant": name, "reps": 3, "first_result_s_median": s, "first_result_s_min": s, "first_result_s_max": s,
         "cpu_s_median": s, "peak_rss_mb_median": mb, "peak_rss_mb_max": mb}
        for name, s, mb in (("tledge", tledge_s, 100.0), ("tensorflow", 4.0, 600.0))
    ]
    return {"command": "scripts/bench_startup.py", "settings": {}, "results": rows, "goals": [
        {"goal": "< 1 s from process start to the first result", "met": tledge_s < 1.0, "detail": "d"}]}


def test_render_keeps_a_hand_written_section_and_lists_goals() -> None:
    old = "# Benchmarks\n\n<!-- bench:train -->\n## 1. Training\n\nWritten by hand: 9x.\n<!-- /bench:train -->\n"
    export_rows = [
        {"mode": "float32", "size_bytes": 9e6, "float_test_accuracy": 0.88, "tflite_test_accuracy": 0.88, "test_top1_agreement": 1.0},
        {"mode": "int8", "size_bytes": 3e6, "float_test_accuracy": 0.88, "tflite_test_accuracy": 0.86, "test_top1_agreement": 0.95},
    ]
    results = {"train": None, "export": export_rows, "startup": _startup(1.4)}

    machine = {"cpu": "test CPU", "cores": 2, "cpu_mhz": 2600.0, "packages": {}}
    text = bench_report.render(results, {}, old, "scripts/benchmarks.py --from-json", machine)

    assert "Written by hand: 9x." in text  # no JSON for train: its old text survives
    assert "| 2 | int8 within 1 point of float (test accuracy) | **NOT MET** |" in text  # 2 points lost
    assert "| 5 | < 1 s from process start to the first result | **NOT MET** |" in text
    assert "Why, and what was tried:" in text  # a missed goal carries its explanation
    assert "x2.9 sooner to the first result" in text  # 4.0 s / 1.4 s
    assert "Not measured yet" in text  # sections with neither JSON nor old text say so
