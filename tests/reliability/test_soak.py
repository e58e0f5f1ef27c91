"""A short run of scripts/soak.py: the real pipeline over a looping generated video,
reopened at every loop, with flat descriptors and memory (the 20,000-frame run is the
script's; its numbers are in BENCHMARKS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tledge_paths import ROOT


def test_short_soak_keeps_descriptors_and_memory_flat(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")  # the script converts its tiny model with it
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "soak.py"), "--model", "tiny", "--frames", "1500", "--warmup", "300", "--every", "150",
         "--video-frames-per-class", "5", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    result_json = json.loads(out.read_text())
    assert result_json == json.loads(result.stdout[result.stdout.index("{") :])
    assert result_json["ok"] is True and [g["met"] for g in result_json["goals"]] == [True, True, True]
    assert "| tiny generated bundle" in result_json["markdown"]
    (report,) = result_json["runs"]
    assert report["frames"] == 1500 and report["reason"] == "1500 frames"
    assert report["loops"] == 75  # 20-frame video: the source was reopened 75 times
    assert report["fds_end"] == report["fds_start"]
    assert report["fds_after_close"] <= report["fds_before"]
    # every other sample (450, 750, ...) falls mid-loop, where the decoder's thread exists
    assert report["threads_growth"] <= 0
    assert report["rss_growth_mb"] < 10.0
    assert len(report["samples"]) == 10  # every 150 frames from 150 on
