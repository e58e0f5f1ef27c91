"""Read a model for the edge runtime: a tledge bundle or any image-classification .tflite.

A tledge bundle is a directory (see models/README.md for the format):

    <name>/model.tflite    the model; TFLite metadata + an embedded zip with
                           labels.txt and tledge.json (everything a device needs)
    <name>/labels.txt      the labels again, one per line, UTF-8
    <name>/manifest.json   tledge.json plus the model file's sha256 and size

`load_model_info` accepts the directory, its manifest.json, or a bare .tflite (tledge's
or a third party's, with `labels_path` for the latter). It verifies what it can: the
sha256 against the manifest, the label count against the output size, and that the
model is an image classifier (one (1, H, W, 3) input, one (1, N) output).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import BundleIntegrityError, ModelError
from edge.preprocess import ResizePolicy

MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.tflite"
LABELS_NAME = "labels.txt"
EMBEDDED_INFO_NAME = "tledge.json"
FORMAT_NAME = "tledge.bundle"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelInfo:
    """Everything the runtime needs to run a model correctly."""

    model_path: Path
    model_bytes: bytes = field(repr=False)
    labels: tuple[str, ...] | None  # None: unknown, the runtime shows class indices
    resize: ResizePolicy = ResizePolicy.CENTER_CROP
    color_order: str = "RGB"
    #: Only for float-input models: x_model = (pixel - mean) / std. tledge models take raw
    #: pixels (normalisation is inside the graph), so (0, 1).
    input_mean: float = 0.0
    input_std: float = 1.0
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)
    is_tledge_bundle: bool = False

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.model_path.stem)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_labels(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """One label per line, UTF-8 (a BOM is tolerated); trailing blank lines dropped."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ModelError(f"Cannot read the labels file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ModelError(f"The labels file {path} is not UTF-8 text; save it as UTF-8, one label per line") from None
    return parse_labels(text, str(path))


def parse_labels(text: str, where: str) -> tuple[str, ...]:
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ModelError(f"The labels file {where} is empty; it needs one label per line")
    return tuple(line.rstrip("\r") for line in lines)


def embedded_files(model_bytes: bytes) -> dict[str, bytes]:
    """Files packed into the .tflite by the TFLite metadata populator (a trailing zip)."""
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
            return {name: archive.read(name) for name in archive.namelist() if not name.endswith("/")}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError):
        return {}


def _resolve(path: Path) -> tuple[Path, dict[str, Any] | None]:
    """Map a user path to (model file, manifest or None)."""
    if path.is_dir():
        manifest_path = path / MANIFEST_NAME
        if manifest_path.is_file():
            path = manifest_path
        elif (path / MODEL_NAME).is_file():
            return path / MODEL_NAME, None
        else:
            raise ModelError(f"{path} is a folder but holds no {MANIFEST_NAME} or {MODEL_NAME}; pass a bundle folder or a .tflite file")
    if path.name.endswith(".json"):
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"Cannot read the bundle manifest {path}: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise ModelError(f"{path} is not a tledge bundle manifest (no \"format\": \"{FORMAT_NAME}\")")
        model_file = path.parent / str(manifest.get("model", {}).get("file", MODEL_NAME))
        return model_file, manifest
    sibling = path.parent / MANIFEST_NAME
    if sibling.is_file():
        try:
            manifest = json.loads(sibling.read_text(encoding="utf-8"))
            if isinstance(manifest, dict) and manifest.get("format") == FORMAT_NAME and manifest.get("model", {}).get("file") == path.name:
                return path, manifest
        except (OSError, ValueError):
            pass
    return path, None


def load_model_info(
    path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str] | None = None,
    verify_sha256: bool = True,
) -> ModelInfo:
    """Load and verify a bundle or .tflite file. Raises `ModelError` with a remedy."""
    model_path, manifest = _resolve(Path(path))
    if not model_path.is_file():
        raise ModelError(f"Model file not found: {model_path}")
    try:
        model_bytes = model_path.read_bytes()
    except OSError as exc:
        raise ModelError(f"Cannot read {model_path}: {exc.strerror or exc}") from None
    if len(model_bytes) < 8 or model_bytes[4:8] != b"TFL3":
        raise ModelError(f"{model_path} is not a TFLite model (no TFL3 identifier): the file is corrupt, truncated or of another format")
    if manifest is not None and verify_sha256:
        expected = str(manifest.get("model", {}).get("sha256", ""))
        actual = sha256_bytes(model_bytes)
        if expected != actual:
            raise BundleIntegrityError(
                f"{model_path} does not match its manifest (sha256 {actual[:12]}… != {expected[:12]}…): "
                "the file was changed or damaged in transit; copy the bundle again or re-export it"
            )
    packed = embedded_files(model_bytes)
    info: dict[str, Any] = {}
    if EMBEDDED_INFO_NAME in packed:
        try:
            info = json.loads(packed[EMBEDDED_INFO_NAME].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ModelError(f"{model_path}: its embedded {EMBEDDED_INFO_NAME} is corrupt; re-export the model") from None
    if manifest is not None:
        info = {**info, **manifest}

    labels: tuple[str, ...] | None = None
    if labels_path is not None:
        labels = read_labels(labels_path)
    elif info.get("labels"):
        labels = tuple(str(label) for label in info["labels"])
    else:
        text_files = [name for name in packed if name.endswith(".txt")]
        wanted = str(info.get("labels_file", LABELS_NAME))
        name = wanted if wanted in packed else (text_files[0] if len(text_files) == 1 else None)
        if name is not None:
            try:
                labels = parse_labels(packed[name].decode("utf-8-sig"), f"{model_path}!{name}")
            except UnicodeDecodeError:
                raise ModelError(f"{model_path}: its embedded labels are not UTF-8") from None

    inp = info.get("input", {})
    try:
        resize = ResizePolicy(inp.get("resize", ResizePolicy.CENTER_CROP.value))
    except ValueError:
        raise ModelError(f"{model_path}: unknown resize policy {inp.get('resize')!r}; upgrade tledge") from None
    color = str(inp.get("color_order", "RGB")).upper()
    if color not in ("RGB", "BGR"):
        raise ModelError(f"{model_path}: unknown colour order {color!r}")
    return ModelInfo(
        model_path=model_path,
        model_bytes=model_bytes,
        labels=labels,
        resize=resize,
        color_order=color,
        input_mean=float(inp.get("mean", 0.0 if info else 127.5)),
        input_std=float(inp.get("std", 1.0 if info else 127.5)),
        manifest=info,
        is_tledge_bundle=bool(info.get("format") == FORMAT_NAME),
    )
