"""The labelling panel in a real headless Chromium: a click files a frame; a cross-site form cannot."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Iterator

import pytest
from inbox_helpers import fill_inbox
from live_helpers import running_pipeline
from test_browser import CHROMIUM_FLAGS, chromium_path

from edge import inbox
from edge.serve import LiveViewSink, ServeOptions
from edge.serve.labelling import LabelDesk

pytestmark = pytest.mark.browser

TOKEN = "browser-labelling-token-0123456789"


class AttackerSite:
    """Another site (http://localhost:PORT/, a different site from 127.0.0.1) whose page
    auto-submits a form POST at the live view, the way a malicious page would."""

    def __init__(self, target: str) -> None:
        from aiohttp import web

        # enctype text/plain makes the body look like JSON: {"label": "stolen", "x": "="}
        page = f"""<!doctype html><form id=f method=POST action="{target}" enctype="text/plain">
<input name='{{"label": "stolen", "x": "' value='"}}'></form><script>document.getElementById('f').submit()</script>"""

        async def index(request: web.Request) -> web.Response:
            return web.Response(text=page, content_type="text/html")

        self._app = web.Application()
        self._app.router.add_get("/", index)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _serve(self) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(self._app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (dev extra)")
    executable = chromium_path()
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=executable, headless=True, args=CHROMIUM_FLAGS, viewport={"width": 1000, "height": 900}
        )
        try:
            yield context
        finally:
            context.close()


def test_a_click_files_the_frame_and_a_cross_site_form_cannot(colour_info, colour_video, tmp_path: Path, browser) -> None:
    expect = pytest.importorskip("playwright.sync_api").expect
    desk = LabelDesk(tmp_path / "inbox", tmp_path / "data", ("red", "green", "blue"))
    frames = fill_inbox(desk.inbox_dir, ["red", "green"])
    sink = LiveViewSink(ServeOptions(port=0, token=TOKEN, stream_fps=10), colour_info, desk)
    with running_pipeline(colour_info, colour_video, [sink]):
        page = browser.pages[0] if browser.pages else browser.new_page()
        page.goto(f"http://127.0.0.1:{sink.port}/?token={TOKEN}", timeout=20_000)
        page.wait_for_selector("#uncertain:not([hidden])", timeout=15_000)
        # Locator waits, not wait_for_function: the page's CSP forbids the eval that polling a string needs.
        expect(page.locator("#uncertain-list li")).to_have_count(2, timeout=15_000)
        first = page.locator(f'#uncertain-list li[data-name="{frames[0].name}"]')
        expect(first.locator("img")).to_have_js_property("naturalWidth", 56, timeout=10_000)
        assert "red 55.0%" in first.locator(".why").inner_text()

        first.get_by_role("button", name="blue", exact=True).click()  # the user disagrees with the model
        expect(page.locator("#uncertain-list li")).to_have_count(1, timeout=10_000)
        assert (desk.data_dir / "blue" / frames[0].name).is_file()
        assert "filed" in page.inner_text("#uncertain-message")
        assert [f.name for f in inbox.list_frames(desk.inbox_dir).frames] == [frames[1].name]

        # A page on another site posts a form at the same endpoint: the browser sends no
        # cookie (SameSite=Strict) and says cross-site; the server refuses, nothing moves.
        attacker = AttackerSite(f"http://127.0.0.1:{sink.port}/api/uncertain/{frames[1].name}/label")
        try:
            with page.expect_response(lambda r: "/api/uncertain/" in r.url, timeout=15_000) as refused:
                page.goto(f"http://localhost:{attacker.port}/", timeout=15_000)
            assert refused.value.status == 403 and refused.value.request.method == "POST"
        finally:
            attacker.close()
        assert [f.name for f in inbox.list_frames(desk.inbox_dir).frames] == [frames[1].name]
        assert sorted(os.listdir(desk.data_dir)) == ["blue"]
