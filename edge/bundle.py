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
import re
import struct
import zipfile
import zlib
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


#: An index-prefixed label line, as Teachable Machine ("0 cat") and pycoral ("0:cat",
#: "0  cat") write them: the index, then spaces and/or one colon, then the name.
_INDEXED_LINE = re.compile(r"^\s*(\d+)(?:\s*:\s*|\s+)(\S.*?)\s*$")


def parse_labels(text: str, where: str) -> tuple[str, ...]:
    """Labels from a labels file's text, one per line, in output order.

    Plain files (Google's, tledge's) give each line as the name. When every non-blank line
    starts with an index ("0 cat", "0:cat"), the names are what follows the index, at the
    positions the indices give; a name that merely contains spaces ("t shirt") is kept
    whole. Trailing blank lines are dropped.
    """
    lines = [line.rstrip("\r") for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ModelError(f"The labels file {where} is empty; it needs one label per line")
    indexed = _indexed_labels(lines, where)
    return indexed if indexed is not None else tuple(lines)


def _indexed_labels(lines: list[str], where: str) -> tuple[str, ...] | None:
    """The names of an index-prefixed file, or None when not every line has an index."""
    matches = [_INDEXED_LINE.match(line) for line in lines if line.strip()]
    if not all(matches):
        return None
    by_index: dict[int, str] = {}
    for match in matches:
        index, name = int(match.group(1)), match.group(2)
        if index in by_index:
            raise ModelError(f"The labels file {where} gives index {index} twice; each index needs exactly one name")
        by_index[index] = name
    missing = [i for i in range(max(by_index) + 1) if i not in by_index]
    if missing:
        raise ModelError(
            f"The labels file {where} has no name for index {', '.join(map(str, missing[:5]))}"
            f"{' ...' if len(missing) > 5 else ''}; give every output index 0..{max(by_index)} a line"
        )
    return tuple(by_index[i] for i in range(len(by_index)))


#: Largest embedded file read (bytes). Labels and tledge.json are kilobytes; a bigger
#: entry (or a zip bomb posing as one) is ignored rather than inflated into memory.
MAX_EMBEDDED_BYTES = 8 * 1024 * 1024

# What a damaged trailing zip can raise (NotImplementedError: unknown compression,
# RuntimeError: encrypted entry, zlib.error: corrupt deflate stream).
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, NotImplementedError, RuntimeError, zlib.error, struct.error)


def embedded_files(model_bytes: bytes) -> dict[str, bytes]:
    """Files packed into the .tflite by the TFLite metadata populator (a trailing zip).

    Damaged or oversized entries are left out: the caller then reports what is missing.
    """
    found: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
            for entry in archive.infolist():
                if entry.is_dir() or entry.file_size > MAX_EMBEDDED_BYTES:
                    continue
                try:
                    found[entry.filename] = archive.read(entry)
                except _ZIP_ERRORS:
                    continue
    except _ZIP_ERRORS:
        return {}
    return found


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
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
            raise ModelError(f"Cannot read the bundle manifest {path}: {exc}; copy the bundle again or re-export it") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise ModelError(f"{path} is not a tledge bundle manifest (no \"format\": \"{FORMAT_NAME}\")")
        return path.parent / _manifest_model_file(manifest, path), manifest
    sibling = path.parent / MANIFEST_NAME
    if sibling.is_file():
        try:
            manifest = json.loads(sibling.read_text(encoding="utf-8"))
            if isinstance(manifest, dict) and manifest.get("format") == FORMAT_NAME and _section(manifest, "model", sibling).get("file") == path.name:
                return path, manifest
        except (OSError, ValueError, RecursionError):
            pass  # a foreign or damaged manifest beside a bare .tflite: treat it as bare
    return path, None


def _section(info: dict[str, Any], key: str, where: Path) -> dict[str, Any]:
    """`info[key]` as a dict ({} when absent); a manifest of another shape is an error."""
    value = info.get(key, {})
    if not isinstance(value, dict):
        raise ModelError(f"{where}: \"{key}\" must be an object, not {type(value).__name__}; re-export the bundle")
    return value


def _manifest_model_file(manifest: dict[str, Any], where: Path) -> str:
    """The model's file name from the manifest: a plain name inside the bundle folder."""
    name = _section(manifest, "model", where).get("file", MODEL_NAME)
    if not isinstance(name, str) or not name or name != Path(name).name or name in (".", ".."):
        raise ModelError(f"{where}: \"model.file\" must be a file name inside the bundle folder, not {name!r}; re-export the bundle")
    return name


def _read_model_bytes(model_path: Path) -> bytes:
    """The whole model file, after checking its TFL3 identifier (so a video or a photo
    passed by mistake is refused without being read into memory)."""
    if not model_path.is_file():
        raise ModelError(f"Model file not found: {model_path}")
    try:
        with open(model_path, "rb") as stream:
            head = stream.read(8)
            if len(head) < 8 or head[4:8] != b"TFL3":
                raise ModelError(
                    f"{model_path} is not a TFLite model (no TFL3 identifier): the file is corrupt, "
                    "truncated or of another format; pass a .tflite file or a bundle folder"
                )
            return head + stream.read()
    except OSError as exc:
        raise ModelError(f"Cannot read {model_path}: {exc.strerror or exc}") from None


def load_model_info(
    path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str] | None = None,
    verify_sha256: bool = True,
) -> ModelInfo:
    """Load and verify a bundle or .tflite file. Raises `ModelError` with a remedy."""
    model_path, manifest = _resolve(Path(path))
    model_bytes = _read_model_bytes(model_path)
    if manifest is not None and verify_sha256:
        expected = str(_section(manifest, "model", model_path).get("sha256", ""))
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
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise ModelError(f"{model_path}: its embedded {EMBEDDED_INFO_NAME} is corrupt; re-export the model") from None
        if not isinstance(info, dict):
            raise ModelError(f"{model_path}: its embedded {EMBEDDED_INFO_NAME} is not a JSON object; re-export the model")
    if manifest is not None:
        info = {**info, **manifest}

    labels: tuple[str, ...] | None = None
    if labels_path is not None:
        labels = read_labels(labels_path)
    elif info.get("labels"):
        labels = _labels_from_info(info["labels"], model_path)
    else:
        text_files = [name for name in packed if name.endswith(".txt")]
        wanted = str(info.get("labels_file", LABELS_NAME))
        name = wanted if wanted in packed else (text_files[0] if len(text_files) == 1 else None)
        if name is not None:
            try:
                labels = parse_labels(packed[name].decode("utf-8-sig"), f"{model_path}!{name}")
            except UnicodeDecodeError:
                raise ModelError(f"{model_path}: its embedded labels are not UTF-8") from None

    inp = _section(info, "input", model_path)
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
        input_mean=_number(inp.get("mean", 0.0 if info else 127.5), "input.mean", model_path),
        input_std=_nonzero(_number(inp.get("std", 1.0 if info else 127.5), "input.std", model_path), "input.std", model_path),
        manifest=info,
        is_tledge_bundle=bool(info.get("format") == FORMAT_NAME),
    )


def _labels_from_info(value: Any, where: Path) -> tuple[str, ...]:
    """The manifest's "labels": a list of strings."""
    if not isinstance(value, list) or not all(isinstance(label, str) for label in value):
        raise ModelError(f"{where}: \"labels\" must be a list of strings; re-export the bundle or pass --labels FILE")
    return tuple(value)


def _number(value: Any, key: str, where: Path) -> float:
    """A finite number from the manifest (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
        raise ModelError(f"{where}: \"{key}\" must be a finite number, not {value!r}; re-export the bundle")
    return float(value)


def _nonzero(value: float, key: str, where: Path) -> float:
    if value == 0.0:
        raise ModelError(f"{where}: \"{key}\" is 0 (pixels would be divided by it); re-export the bundle")
    return value
