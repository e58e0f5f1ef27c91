"""The edge commands end to end: predict, run (incl. SIGTERM to a real process), bench,
collect, and their errors (exit code 1, a message, no traceback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def colour_pngs(tmp_path) -> list[Path]:
    paths = []
    for name, rgb in (("red", (230, 20, 20)), ("blue", (20, 20, 230))):
        frame_rgb = np.full((50, 70, 3), rgb, np.uint8)
        paths.append(tmp_path / f"{name}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
    return paths


def test_predict_json_skips_bad_files_by_name(colour_bundle, colour_pngs, tmp_path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    result = invoke("predict", colour_bundle, colour_pngs[0], broken, colour_pngs[1], "--json", "--top-k", "2")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(Path(r["path"]).name, r["label"]) for r in lines] == [("red.png", "red"), ("blue.png", "blue")]
    assert len(lines[0]["top"]) == 2 and lines[0]["score"] > 0.5
    assert "broken.jpg" in result.stderr and "Traceback" not in result.output


def test_predict_table_and_all_failing_exit_1(colour_bundle, colour_pngs, tmp_path) -> None:
    result = invoke("predict", colour_bundle, *colour_pngs)
    assert result.exit_code == 0 and "red" in result.stdout and "blue" in result.stdout
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    result = invoke("predict", colour_bundle, empty)
    assert result.exit_code == 1 and "none of the 1 image" in result.stderr


def test_predict_with_a_missing_delegate_exits_1_with_a_hint(colour_bundle, colour_pngs) -> None:
    # A real process: a half-built backend Delegate would print a traceback at exit.
    cmd = [sys.executable, "-m", "edge.cli", "predict", str(colour_bundle), str(colour_pngs[0]), "--delegate", "libedgetpu.so.1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "libedgetpu1-std" in result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


def test_run_on_a_video_writes_json_lines_and_a_csv(colour_bundle, colour_video, tmp_path) -> None:
    path, truth = colour_video
    log = tmp_path / "run.csv"
    result = invoke("run", colour_bundle, "--source", path, "--display", "off", "--csv", log, "--top-k", "1")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["label"] for r in records] == truth
    assert len(log.read_text().splitlines()) == len(truth) + 1
    assert f"stopped (end of input): {len(truth)} frames" in result.stderr
    changes = invoke("run", colour_bundle, "--source", path, "--display", "off", "--on-change")
    assert [json.loads(line)["label"] for line in changes.stdout.splitlines()] == ["red", "green", "blue", "gray"]


def test_run_with_a_bad_source_or_option_exits_1(colour_bundle, tmp_path) -> None:
    result = invoke("run", colour_bundle, "--source", tmp_path / "missing.mp4", "--display", "off")
    assert result.exit_code == 1 and "not found" in result.stderr
    result = invoke("run", colour_bundle, "--source", "0", "--display", "sometimes")
    assert result.exit_code == 2 and "--display" in result.output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_real_run_with_a_final_stats_line(colour_bundle, colour_video, signum) -> None:
    cmd = [sys.executable, "-m", "edge.cli", "run", str(colour_bundle), "--source", str(colour_video[0]), "--loop", "--realtime", "--display", "off"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline()  # the pipeline is running once a result is out
        assert json.loads(first)["index"] == 0
        time.sleep(0.3)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"stopped ({signal.Signals(signum).name}):" in err and "fps" in err and "latency p50" in err
    assert "Traceback" not in err


def test_a_closed_stdout_pipe_ends_the_run_cleanly(colour_bundle, colour_video) -> None:
    """`tledge run ... --loop | head -1`: the run stops with its stats line, exit 0, no traceback."""
    cmd = [sys.executable, "-m", "edge.cli", "run", str(colour_bundle), "--source", str(colour_video[0]), "--loop", "--display", "off"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(proc.stdout.readline())["index"] == 0
        proc.stdout.close()  # the reader goes away, as `head` does
        err = proc.stderr.read()
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped (output closed)" in err and "Traceback" not in err and "BrokenPipe" not in err


def test_bench_reports_percentiles_per_thread_count_for_both_apis(colour_bundle) -> None:
    for api in ("interpreter", "compiled"):
        result = invoke("bench", colour_bundle, "--threads", "1,2", "--runs", "5", "--warmup", "1", "--api", api, "--json")
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        assert [(r["api"], r["threads"], r["runs"]) for r in rows] == [(api, 1, 5), (api, 2, 5)]
        assert all(0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["throughput"] > 0 for r in rows)
    result = invoke("bench", colour_bundle, "--threads", "1,x")
    assert result.exit_code == 1 and "'x' is not a thread count" in result.stderr


def test_collect_writes_labelled_jpegs_at_an_interval(colour_video, tmp_path) -> None:
    path, _ = colour_video  # 32 frames at 20 fps = 1.6 s of video
    data = tmp_path / "data"
    result = invoke("collect", data, "--label", "red", "--source", path, "--count", "3", "--interval", "0.5")
    assert result.exit_code == 0, result.output
    files = sorted((data / "red").iterdir())
    assert len(files) == 3 and all(f.suffix == ".jpg" for f in files)
    first = cv2.imread(str(files[0]))
    assert first.shape == (60, 80, 3) and first[..., 2].mean() > 150  # red, stored as a normal JPEG
    again = invoke("collect", data, "--label", "red", "--source", path, "--count", "40", "--interval", "0")
    assert again.exit_code == 0
    assert len(list((data / "red").iterdir())) == 3 + 32  # unique names: nothing overwritten
    assert not list((data / "red").glob(".tmp-*"))


@pytest.mark.parametrize("label", ["", "../escape", ".hidden", "a/b"])
def test_collect_refuses_labels_that_are_not_folder_names(tmp_path, colour_video, label) -> None:
    result = invoke("collect", tmp_path / "data", "--label", label, "--source", colour_video[0])
    assert result.exit_code == 1 and "cannot be a folder name" in result.stderr
    assert not (tmp_path / "escape").exists()


@pytest.mark.slow
def test_predict_names_cat_and_espresso_with_googles_model(shared) -> None:
    models = shared / "models"
    result = invoke(
        "predict", models / "mobilenet_v2_1.0_224_quant.tflite", shared / "images" / "chelsea.png", shared / "images" / "coffee.png",
        "--labels", models / "imagenet_labels.txt", "--json",
    )
    assert result.exit_code == 0, result.output
    cat, coffee = (json.loads(line) for line in result.stdout.splitlines() if line.startswith("{"))
    assert "cat" in cat["label"]
    assert "espresso" in coffee["label"] or "coffee" in coffee["label"]
