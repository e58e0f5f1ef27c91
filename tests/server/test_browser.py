"""The acceptance test: the page in a real headless Chromium, fed by the real pipeline."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from live_helpers import COLOURS, running_pipeline

from edge.serve import LiveViewSink, ServeOptions

pytestmark = pytest.mark.browser

TOKEN = "browser-test-token-0123456789"
CHROMIUM_FLAGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:  # pragma: no cover
        pytest.skip("Chromium is not installed (scripts/test.sh installs Debian's chromium as root)")
    return path


def png_to_bgr(png: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_live_view_in_a_real_browser(colour_info, colour_video, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (dev extra)")
    executable = chromium_path()
    sink = LiveViewSink(ServeOptions(port=0, token=TOKEN, stream_fps=10), colour_info)
    with running_pipeline(colour_info, colour_video, [sink]), sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh profile
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1000, "height": 560},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(f"http://127.0.0.1:{sink.port}/?token={TOKEN}", timeout=20_000)

            # The token became an HttpOnly, SameSite=Strict cookie; the address bar and the page lost it.
            assert page.url == f"http://127.0.0.1:{sink.port}/"
            cookies = {c["name"]: c for c in context.cookies()}
            cookie = cookies[f"tledge_token_{sink.port}"]
            assert cookie["value"] == TOKEN and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
            assert page.evaluate("document.cookie") == ""  # scripts cannot read it
            assert TOKEN not in page.content()

            # The model's name and labels, from /api/model.
            page.wait_for_function("document.getElementById('labels').children.length === 3", timeout=15_000)
            assert page.inner_text("#model-name") == "colours"
            assert page.locator("#labels li").all_inner_texts() == list(COLOURS)

            # The prediction, from the event stream: each colour of the video shows up in turn.
            seen: set[str] = set()
            deadline = time.monotonic() + 15
            while seen != set(COLOURS) and time.monotonic() < deadline:
                seen.add(page.inner_text("#top-label"))
                time.sleep(0.1)
            assert seen >= set(COLOURS), seen
            assert page.locator("#bars li").count() == 3
            assert page.inner_text("#status") == "live"
            assert float(page.inner_text("#fps")) > 5
            assert page.inner_text("#latency").endswith(" ms")

            # The video: the MJPEG <img> has real frames that change over time.
            page.wait_for_function("document.getElementById('stream').naturalWidth === 160", timeout=10_000)
            first = png_to_bgr(page.locator("#stream").screenshot())
            time.sleep(0.7)
            second = png_to_bgr(page.locator("#stream").screenshot())
            assert first.std() > 20 and second.std() > 20, "the image is blank"
            assert np.abs(first.astype(int) - second.astype(int)).mean() > 2, "the image does not change"

            # The label on the page matches the picture: its dominant colour (BGR order here).
            label = page.inner_text("#top-label")
            shot = png_to_bgr(page.locator("#stream").screenshot())
            dominant = ("blue", "green", "red")[int(np.argmax(np.median(shot.reshape(-1, 3), axis=0)))]
            if label != dominant:  # the segment may have changed between the two reads: look again
                time.sleep(0.3)
                label = page.inner_text("#top-label")
                shot = png_to_bgr(page.locator("#stream").screenshot())
                dominant = ("blue", "green", "red")[int(np.argmax(np.median(shot.reshape(-1, 3), axis=0)))]
            assert label == dominant

            # The cookie also opens the API to the page's own scripts.
            assert page.evaluate("fetch('api/model').then(r => r.status)") == 200  # the cookie opens the API too
            assert TOKEN not in page.content()

            # A refused hot update (run --watch) is said on the page, in its next look at /api/model.
            assert page.is_hidden("#model-update")
            sink.on_event({"event": "model_update", "status": "rejected", "bundle": "/srv/models/v9", "model": "colours@1234",
                           "error": "/srv/models/v9/model.tflite does not match its manifest"})
            page.wait_for_selector("#model-update:not([hidden])", timeout=10_000)
            assert page.inner_text("#model-update") == (
                "update refused (v9): v9/model.tflite does not match its manifest - still running colours@1234")
            assert page.get_attribute("#model-update", "data-status") == "rejected"

            screenshot = tmp_path / "live_view.png"
            page.screenshot(path=str(screenshot))
            assert screenshot.stat().st_size > 10_000
        finally:
            context.close()
