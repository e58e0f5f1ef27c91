"""The bundle layout of models/README.md, written by hand for tests that convert their own
tiny models. A plain module (not conftest) so every test folder can import it:
`from bundle_files import pack_bundle`."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any


def pack_bundle(folder: Path, model_bytes: bytes, info: dict[str, Any]) -> dict[str, Any]:
    """Write `folder`/model.tflite (the model with labels.txt and tledge.json zipped onto
    it, as the exporter embeds them) and labels.txt; return the manifest (`info` plus the
    model's file entry) for the caller to complete and write."""
    folder.mkdir(parents=True, exist_ok=True)
    labels_text = "\n".join(info["labels"]) + "\n"
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("labels.txt", labels_text)
        archive.writestr("tledge.json", json.dumps(info))
    data = model_bytes + packed.getvalue()
    (folder / "model.tflite").write_bytes(data)
    (folder / "labels.txt").write_text(labels_text, encoding="utf-8")
    return {**info, "model": {"file": "model.tflite", "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}}
