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
    stated = [
        {"section": "export", "goal": "int8 within 1 point of float (test accuracy)", "stated": "2026-01-02", "changes": []},
        {"section": "startup", "goal": "< 1 s from process start to the first result", "stated": "2026-01-02",
         "changes": [{"was": "< 2 s from process start to the first result", "until": "2026-01-05"}]},
        {"section": "train", "goal": ">= 10x faster", "stated": "2026-01-02", "changes": []},
    ]

    machine = {"cpu": "test CPU", "cores": 2, "cpu_mhz": 2600.0, "packages": {}}
    text = bench_report.render(results, {}, old, "scripts/benchmarks.py --from-json", machine, stated_goals=stated)

    assert "Written by hand: 9x." in text  # no result file for train: its old text survives...
    assert "> **No result file**: `scripts/results/bench_train.json` is not committed" in text  # ...marked as such
    assert "| 2 | int8 within 1 point of float (test accuracy) | 2026-01-02 | **NOT MET** |" in text  # 2 points lost
    assert "| 5 | < 1 s from process start to the first result | 2026-01-02 | **NOT MET** |" in text
    assert "| 1 | >= 10x faster | 2026-01-02 | no committed result file (`scripts/results/bench_train.json`) |" in text
    # A goal the export section reports but nobody stated beforehand is flagged.
    assert "| 2 | int8 top-1 agreement with the float model >= 98% (test) | **not stated in scripts/results/goals.json** | **NOT MET** |" in text
    assert 'until 2026-01-05 the goal read "< 2 s from process start to the first result"' in text  # old goal stays visible
    assert "Result file: `scripts/results/bench_export.json`." in text  # each section cites its file
    assert "Why, and what was tried" not in text  # no generated explanations
    assert "x2.9 sooner to the first result" in text  # 4.0 s / 1.4 s
    assert "Not measured yet" in text  # sections with neither a result file nor old text say so
    # Re-rendering its own output marks a kept section once, not twice.
    again = bench_report.render(results, {}, text, "scripts/benchmarks.py --from-json", machine, stated_goals=stated)
    assert again.count("> **No result file**") == 1


def _note(tmp_path, run_date: str) -> bench_report.Note:
    path = tmp_path / "startup.md"
    path.write_text(f"---\nwritten: 2026-01-03\nrun: scripts/results/bench_startup.json\nrun_date_utc: {run_date}\n---\nSlow because of imports.\n")
    return bench_report.parse_note(path)


def test_a_note_is_included_verbatim_and_flagged_once_its_run_is_replaced(tmp_path) -> None:
    machine = {"cpu": "test CPU", "cores": 2, "cpu_mhz": 2600.0, "packages": {}}
    startup = {**_startup(1.4), "date_utc": "2026-01-03T10:00:00Z"}

    current = bench_report.render({"startup": startup}, {}, "", "x", machine, notes={"startup": _note(tmp_path, "2026-01-03T10:00:00Z")})
    assert "Slow because of imports." in current
    assert "explaining the run `scripts/results/bench_startup.json` of 2026-01-03T10:00:00Z" in current
    assert "Stale note" not in current and "Unchecked note" not in current

    stale = bench_report.render({"startup": startup}, {}, "", "x", machine, notes={"startup": _note(tmp_path, "2026-01-01T09:00:00Z")})
    assert "Slow because of imports." in stale
    assert "> **Stale note**: it explains `scripts/results/bench_startup.json` of 2026-01-01T09:00:00Z, but this section now cites" in stale

    missing = bench_report.render({}, {}, "", "x", machine, notes={"startup": _note(tmp_path, "2026-01-03T10:00:00Z")})
    assert "> **Unchecked note**: `scripts/results/bench_startup.json` is not committed" in missing


def test_a_note_without_its_run_in_the_header_is_refused(tmp_path) -> None:
    path = tmp_path / "pipeline.md"
    path.write_text("---\nwritten: 2026-01-03\n---\nBecause.\n")
    with pytest.raises(ValueError, match="lacks run, run_date_utc"):
        bench_report.parse_note(path)


def test_committed_notes_and_goals_parse_and_name_known_sections() -> None:
    notes = bench_report.load_notes()
    assert set(notes) <= set(bench_report.TITLES)
    goals = bench_report.load_goals()
    assert goals and {g["section"] for g in goals} <= set(bench_report.TITLES)
    assert all(g["stated"] and isinstance(g["changes"], list) for g in goals)


def test_export_section_gives_accuracies_with_wilson_intervals() -> None:
    row = {"mode": "int8", "io": "uint8", "size_bytes": 2_740_000, "test_images": 372, "val_images": 341, "float_test_accuracy": 323 / 372,
           "tflite_test_accuracy": 327 / 372, "test_top1_agreement": 367 / 372, "tflite_val_accuracy": 302 / 341, "calibration_images": 64}
    text = bench_report.render_export({"rows": [row]})
    # 323/372 -> 86.8 % (83.0-89.9 %); the same n on every test column, val with its own
    assert "| 86.8 % (83.0-89.9 %, n=372) | 87.9 % " in text and "n=341)" in text
    goals = bench_report.export_goals({"rows": [row]})
    assert "98.7 % (96.9-99.4 %, n=372) of 372 test images" in goals[1]["detail"]
    bare = bench_report.render_export({"rows": [{**row, "test_images": None, "val_images": None}]})
    assert "| 86.8% |" in bare  # a result file without n stays as it was
