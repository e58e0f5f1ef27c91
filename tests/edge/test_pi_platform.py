"""What scripts/pi_check.sh found on an emulated Raspberry Pi (arm64 Debian), checked on x86.

- opencv-python's wheels link Qt, which needs libGL.so.1 and GLib: on a bare Pi OS Lite
  userland `import cv2` fails. The core install therefore uses opencv-python-headless,
  and a window is only attempted when the OpenCV build has a GUI.
- ai-edge-litert has no 32-bit ARM wheel: pyproject's marker must leave it out there.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import cv2
import pytest

from edge import sinks
from edge.errors import TledgeError

ROOT = Path(__file__).resolve().parents[2]


def _core_requirements() -> list[str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def test_core_opencv_is_the_headless_build() -> None:
    names = [re.split(r"[<>=;\s\[]", req, maxsplit=1)[0].lower() for req in _core_requirements()]
    assert "opencv-python-headless" in names
    assert "opencv-python" not in names and "opencv-contrib-python" not in names


@pytest.mark.parametrize(
    ("machine", "wanted"),
    [("x86_64", True), ("aarch64", True), ("arm64", True), ("armv7l", False), ("armv6l", False)],
)
def test_ai_edge_litert_marker_skips_32_bit_arm_only(machine: str, wanted: bool) -> None:
    requirements = pytest.importorskip("packaging.requirements")
    litert = [requirements.Requirement(r) for r in _core_requirements() if r.startswith("ai-edge-litert")]
    assert len(litert) == 1 and litert[0].marker is not None
    env = {"platform_machine": machine, "sys_platform": "linux", "python_version": "3.11"}
    assert litert[0].marker.evaluate(env) is wanted


def test_opencv_has_gui_reads_the_build_information() -> None:
    line = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.M)
    assert line is not None, "OpenCV's build information has no GUI line"
    assert sinks.opencv_has_gui() is (line.group(1).upper() != "NONE")


def test_headless_opencv_means_no_window_and_a_named_fix(monkeypatch) -> None:
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(sinks, "opencv_has_gui", lambda: False)
    assert sinks.wants_window("auto") is False  # JSON lines instead, no crash
    with pytest.raises(TledgeError, match=r"opencv-python-headless.*--serve.*pip install opencv-python.*libgl1"):
        sinks.wants_window("on")
    monkeypatch.setattr(sinks, "opencv_has_gui", lambda: True)
    assert sinks.wants_window("auto") is True
