"""Acceptance: the device's model lifecycle end to end, on generated data, with real
processes: train -> export -> `tledge run --watch` on a looping video -> retrain with more
data -> export -> `tledge deploy` into the watched folder -> the running pipeline switches
between two frames with no frame index missing; then a damaged bundle arrives and the old
model keeps running. `tledge doctor` on a good, a damaged and a failing bundle.

Both trainings run before the pipeline starts (on a device the retraining happens on
another machine; here it would only compete with the pipeline for the two CPU cores).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
import warnings
from typing import Any

from typer.testing import CliRunner

from lifecycle_models import copy_bundle, rewrite_selftest, tamper_model
from edge.cli import app

ROOT = Path(__file__).resolve().parents[2]
TLEDGE = [sys.executable, "-m", "edge.cli"]
runner = CliRunner()


def train_tiny(data: Path, out: Path) -> Path:
    """48 px (as the shared `tiny_run`) MobileNetV2 alpha 0.35, weights none, 1 epoch: plumbing, not accuracy."""
    from trainer.config import CacheMode, DataOptions, FeatureEngine, HyperParams, ModelOptions, RuntimeOptions, TrainOptions, WeightsKind, WeightsSpec
    from trainer.train import train

    options = TrainOptions(
        data=DataOptions(data),
        model=ModelOptions(alpha=0.35, image_size=48, weights=WeightsSpec(WeightsKind.NONE)),
        hyper=replace(HyperParams(epochs=1, augment_views=1)),
        runtime=RuntimeOptions(engine=FeatureEngine.KERAS, cache=CacheMode.MEMORY, quiet=True),
        out_dir=out,
        name="field",
        seed=0,
    )
    return train(options).run_dir


def export_int8(run: Path, out: Path) -> Path:
    from trainer.export import CalibrationWarning, ExportOptions, export

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)  # a few images on purpose
        return export(run, ExportOptions.for_int8(out=out, accept_drop=True, calibration_images=16)).bundle_dir


class Lines:
    """Reads a process's stdout in a thread; JSON lines into a queue and a list."""

    def __init__(self, stream: Any) -> None:
        self.records: list[dict[str, Any]] = []
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            record = json.loads(line)
            self.records.append(record)
            self.queue.put(record)

    def wait_for(self, predicate: Any, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                record = self.queue.get(timeout=1.0)
            except queue.Empty:
                continue
            if predicate(record):
                return record
        raise AssertionError(f"not seen within {timeout} s; last records: {self.records[-3:]}")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([*TLEDGE, *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def grown(dataset: Path, out: Path, per_class: int) -> Path:
    """`dataset` plus `per_class` new images in each class folder: "more data"."""
    from trainer.synthetic import make_dataset

    shutil.copytree(dataset, out)
    extra = make_dataset(out.parent / "extra", per_class=per_class, size=48, seed=1)
    for image in extra.glob("*/*"):
        shutil.copy2(image, out / image.parent.name / f"new-{image.name}")
    return out


def test_train_export_watch_retrain_deploy_switch_and_reject(tiny_run: Path, synthetic_dataset: Path, tmp_path: Path) -> None:
    """`tiny_run` (the session's shared training run) is the first training."""
    from trainer.synthetic import make_video

    first = export_int8(tiny_run, tmp_path / "export" / "field-v1")
    second = export_int8(train_tiny(grown(synthetic_dataset, tmp_path / "data-more", 6), tmp_path / "runs"), tmp_path / "export" / "field-v2")
    clip, _ = make_video(tmp_path / "clip.avi", frames_per_class=5, size=(64, 48))

    # doctor: a good bundle, a damaged one, one whose self-test fails on this runtime
    good = runner.invoke(app, ["doctor", str(first)])
    assert good.exit_code == 0 and good.stdout.strip().endswith("all checks passed"), good.output
    damaged = copy_bundle(second, tmp_path / "damaged")
    tamper_model(damaged)
    result = runner.invoke(app, ["doctor", str(damaged)])
    assert result.exit_code == 1 and "FAIL  checksums:" in result.stdout and "does not match its manifest" in result.stdout
    failing = copy_bundle(first, tmp_path / "failing")
    rewrite_selftest(failing, outputs_shift=100)
    result = runner.invoke(app, ["doctor", str(failing)])
    assert result.exit_code == 1 and "FAIL  selftest[0]:" in result.stdout and "largest difference 100 codes (allowed 8)" in result.stdout

    models = tmp_path / "device" / "models"
    deployed = cli("deploy", str(first), str(models))
    assert deployed.returncode == 0, deployed.stderr
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [*TLEDGE, "run", str(models), "--watch", "--settle", "0.5", "--source", str(clip), "--loop", "--display", "off", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )
    try:
        lines = Lines(proc.stdout)
        start = lines.wait_for(lambda r: r.get("index", -1) >= 20)
        v1 = start["model"]

        deployed = cli("deploy", str(second), str(models))
        assert deployed.returncode == 0, deployed.stderr
        swap = lines.wait_for(lambda r: r.get("event") == "model_update")
        assert swap["status"] == "swapped" and swap["previous"] == v1 and swap["model"] != v1
        assert swap["bundle"] == str((models / "field-v2").resolve()) and swap["schema_changed"] is False
        lines.wait_for(lambda r: r.get("index", -1) >= swap["last_frame_before"] + 20)

        refused = cli("deploy", str(damaged), str(models))  # deploy checks before it copies
        assert refused.returncode == 1 and "does not match its manifest" in refused.stderr
        shutil.copytree(damaged, models / "field-v3")  # ... but a plain copy can arrive damaged
        rejection = lines.wait_for(lambda r: r.get("event") == "model_update")
        assert rejection["status"] == "rejected" and "does not match its manifest" in rejection["error"]
        assert rejection["model"] == swap["model"]
        after = lines.wait_for(lambda r: "index" in r)
        lines.wait_for(lambda r: r.get("index", -1) >= after["index"] + 20)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    lines.thread.join(timeout=10)
    assert proc.returncode == 0, stderr
    assert "bundle" in stderr and "rejected, still running" in stderr and "Traceback" not in stderr

    records = lines.records
    frames = [r for r in records if "event" not in r]
    assert [r["index"] for r in frames] == list(range(len(frames)))  # no frame index missing
    position = records.index(swap)
    assert {r["model"] for r in records[:position] if "event" not in r} == {v1}
    assert {r["model"] for r in records[position + 1 :] if "event" not in r} == {swap["model"]}
    assert records[position - 1]["index"] == swap["last_frame_before"]
    assert records[position + 1]["index"] == swap["last_frame_before"] + 1  # switched between two frames
