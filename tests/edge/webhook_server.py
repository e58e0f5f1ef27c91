"""A real aiohttp server in a thread that receives webhooks and answers as told."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

from broker import free_port


class WebhookServer:
    """POST /hook: records (headers, body); `script` is a queue of answers: an int status
    or ("sleep", seconds) before a 200. Empty script: 200. `peers` lists each request's
    client (host, port): one port for many requests means one kept-alive connection.
    `keepalive_timeout` (s): how long the server keeps an idle connection open."""

    def __init__(self, keepalive_timeout: float = 75.0) -> None:
        self.port = free_port()
        self.keepalive_timeout = keepalive_timeout
        self.peers: list[tuple[str, int]] = []
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.attempts = 0
        self.script: deque = deque()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("webhook server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _serve(self) -> None:
        from aiohttp import web

        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            self.attempts += 1
            self.peers.append(request.transport.get_extra_info("peername")[:2])
            answer = self.script.popleft() if self.script else 200
            if isinstance(answer, tuple):
                await asyncio.sleep(answer[1])
                answer = 200
            if answer == 200:
                self.received.append((dict(request.headers), body))
            return web.Response(status=answer, text="ok" if answer == 200 else "no")

        async def main() -> None:
            app = web.Application()
            app.router.add_post("/hook", hook)
            self._runner = web.AppRunner(app, keepalive_timeout=self.keepalive_timeout)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            self._ready.set()

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(main())
        self._loop.run_forever()

    def wait_for(self, count: int, timeout: float = 20.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.received) < count:
            time.sleep(0.05)
        return list(self.received)

    def close(self) -> None:
        async def stop() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
