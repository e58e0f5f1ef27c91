"""Writer side of the bundle's golden self-test (the reader is `edge/selftest.py`).

A few held-out images (val first, then test, then train; one per class in turn, at most
`MAX_INPUTS`) are decoded and preprocessed exactly as a device does (`Classifier.preprocess`
on the exported file), run through the exported file with the edge runtime, and stored
as the model's own input tensors with the file's raw outputs in ``selftest.npz``. The
manifest entry records the file's sha256 and the tolerance a device compares with.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge.bundle import MODEL_NAME, load_model_info, sha256_bytes
from edge.classifier import Classifier
from edge.errors import ImageError
from trainer.errors import ExportError
from edge.images import load_rgb
from edge.runtime import make_interpreter
from edge.selftest import MANIFEST_KEY, SELFTEST_NAME, Tolerance

MAX_INPUTS = 8


def pick_inputs(splits: dict[str, Sequence[tuple[str, int]]], limit: int = MAX_INPUTS) -> list[tuple[str, int]]:
    """(path, class) pairs in the order they are tried: val, then test, then train; one
    class after another, so every class is represented when there are at most `limit`
    classes. A few spares follow the first `limit`, for unreadable files."""
    by_class: dict[int, list[tuple[str, int]]] = {}
    for name in ("val", "test", "train"):
        for path, cls in splits.get(name, ()):
            by_class.setdefault(cls, []).append((path, cls))
    queues = [by_class[c] for c in sorted(by_class)]
    order: list[tuple[str, int]] = []
    depth = 0
    while len(order) < limit * 4 and any(depth < len(q) for q in queues):
        order.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    return order[: limit * 4]


def raw_outputs(model_bytes: bytes, tensors: np.ndarray, threads: int = 1) -> np.ndarray:
    """The file's raw output (its own dtype: codes for int8) for each (H, W, 3) tensor."""
    interpreter, _ = make_interpreter(model_bytes, threads=threads)
    return interpreter_outputs(interpreter, tensors)


def interpreter_outputs(interpreter: Any, tensors: np.ndarray) -> np.ndarray:
    """An allocated interpreter's raw output (its own dtype) for each (H, W, 3) tensor, one at a time."""
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for tensor in tensors:
        interpreter.set_tensor(inp["index"], tensor[None, ...])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


def build_selftest(model_path: Path, splits: dict[str, Sequence[tuple[str, int]]], limit: int = MAX_INPUTS) -> tuple[bytes, dict[str, Any]]:
    """(selftest.npz bytes, the manifest's "selftest" entry) for the exported file at `model_path`."""
    clf = Classifier(load_model_info(model_path), threads=1)
    tensors, classes = [], []
    for path, cls in pick_inputs(splits, limit):
        if len(tensors) >= limit:
            break
        try:
            tensors.append(clf.preprocess(load_rgb(path))[0])
        except ImageError:
            continue  # the dataset check reported it; another image stands in
        classes.append(cls)
    if not tensors:
        raise ExportError("No readable image for the bundle's self-test; the run's splits list no readable file")
    inputs = np.stack(tensors)
    outputs = raw_outputs(model_path.read_bytes(), inputs)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, inputs=inputs, outputs=outputs, classes=np.asarray(classes, dtype=np.int64))
    data = buffer.getvalue()
    entry = {
        "file": SELFTEST_NAME,
        "sha256": sha256_bytes(data),
        "size_bytes": len(data),
        "inputs": int(inputs.shape[0]),
        "tolerance": Tolerance().to_dict(),
    }
    return data, entry


def write_selftest(stage: Any, splits: dict[str, Sequence[tuple[str, int]]]) -> dict[str, Any]:
    """Build the self-test from the staged model and write it into `stage` (a
    `BundleStaging`); return the manifest keys to merge: {"selftest": entry}."""
    data, entry = build_selftest(Path(stage.dir) / MODEL_NAME, splits)
    stage.write(SELFTEST_NAME, data)
    return {MANIFEST_KEY: entry}
