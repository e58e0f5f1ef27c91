"""The live view's labelling panel: list the saved uncertain frames, show one, file or discard it.

    GET  /api/uncertain                 {"frames": [...], "labels": [...], "skipped": n}
    GET  /api/uncertain/<name>          the frame's JPEG (only names of the inbox format, only inside DIR)
    POST /api/uncertain/<name>/label    {"label": "mug"}: move it into DATA/<label>/
    POST /api/uncertain/<name>/discard  delete it and its sidecar

Every route sits behind the live view's guard (Host allow-list, Sec-Fetch-Site, token);
the POSTs also pass its state-change check (`auth.state_change_refusal`: a custom
header and a JSON body, which a cross-site form cannot send, and a same-origin Origin).
File work runs in a worker thread, off the server's event loop.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge import inbox
from edge.errors import FrameNotFoundError, InboxError, LabelNameError

if TYPE_CHECKING:
    from aiohttp import web

MAX_BODY_BYTES = 4096  # a label request is a few dozen bytes


@dataclass(frozen=True)
class LabelDesk:
    """Where the panel reads frames from (the --save-uncertain folder) and files them to (DATA)."""

    inbox_dir: Path
    data_dir: Path
    model_labels: tuple[str, ...] = ()

    def listing(self) -> dict[str, Any]:
        found = inbox.list_frames(self.inbox_dir)
        return {
            "frames": [frame.to_dict() for frame in found.frames],
            "labels": inbox.known_labels(self.data_dir, self.model_labels),
            "skipped": len(found.skipped),
        }

    def image(self, name: str) -> bytes:
        return inbox.frame_path(self.inbox_dir, name).read_bytes()

    def file(self, name: str, label: str) -> Path:
        return inbox.file_frame(self.inbox_dir, name, label, self.data_dir)

    def discard(self, name: str) -> None:
        inbox.discard_frame(self.inbox_dir, name)


class LabelRoutes:
    """The panel's handlers over one `LabelDesk`; `LiveApp.routes()` adds `routes()`."""

    def __init__(self, desk: LabelDesk, web: Any) -> None:
        self.desk, self.web = desk, web

    def routes(self) -> list[tuple[str, str, Any]]:
        """(method, path, handler) for each endpoint."""
        return [
            ("GET", "/api/uncertain", self.list_frames),
            ("GET", "/api/uncertain/{name}", self.image),
            ("POST", "/api/uncertain/{name}/label", self.label),
            ("POST", "/api/uncertain/{name}/discard", self.discard),
        ]

    def _error(self, status: int, message: str) -> "web.Response":
        return self.web.json_response({"error": message}, status=status)

    def _name(self, request: "web.Request") -> str:
        return inbox.check_frame_name(request.match_info.get("name", ""))

    async def list_frames(self, request: "web.Request") -> "web.Response":
        try:
            body = await asyncio.to_thread(self.desk.listing)
        except InboxError as exc:
            return self._error(500, str(exc))
        return self.web.json_response(body, dumps=lambda obj: json.dumps(obj, ensure_ascii=False))

    async def image(self, request: "web.Request") -> "web.Response":
        try:
            data = await asyncio.to_thread(self.desk.image, self._name(request))
        except (InboxError, OSError):
            return self._error(404, "no such saved frame (already labelled or discarded?)")
        return self.web.Response(body=data, headers={"Content-Type": "image/jpeg"})

    async def label(self, request: "web.Request") -> "web.Response":
        try:
            name = self._name(request)
        except InboxError as exc:
            return self._error(404, str(exc))
        payload = await self._json(request)
        if not isinstance(payload, dict) or not isinstance(payload.get("label"), str):
            return self._error(400, 'send a JSON object {"label": "NAME"}')
        try:
            target = await asyncio.to_thread(self.desk.file, name, payload["label"])
        except FrameNotFoundError as exc:
            return self._error(404, str(exc))
        except LabelNameError as exc:
            return self._error(400, str(exc))
        except InboxError as exc:  # the disk refused: DATA not writable or full
            return self._error(500, str(exc))
        return self.web.json_response({"filed": name, "label": payload["label"], "folder": target.parent.name},
                                      dumps=lambda obj: json.dumps(obj, ensure_ascii=False))

    async def discard(self, request: "web.Request") -> "web.Response":
        try:
            name = self._name(request)
            await asyncio.to_thread(self.desk.discard, name)
        except InboxError as exc:
            return self._error(404, str(exc))
        return self.web.json_response({"discarded": name})

    async def _json(self, request: "web.Request") -> Any:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return None
        try:
            raw = await request.content.read(MAX_BODY_BYTES + 1)
            if len(raw) > MAX_BODY_BYTES:
                return None
            return json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None
