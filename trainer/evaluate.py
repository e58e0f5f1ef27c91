"""Metrics, confusion matrices, plots, and `tledge evaluate` of a run's Keras model."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import DataError, ImageError, ModelError
from edge.images import load_rgb
from edge.preprocess import ResizePolicy, resize_rgb
from trainer.bundle_writer import umask_mode


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro F1, confusion matrix.

    The confusion matrix is indexed [true class][predicted class].
    """
    n = len(labels)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.argmax(probs, axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    per_class: dict[str, dict[str, float | int]] = {}
    f1s = []
    for i, name in enumerate(labels):
        tp = int(cm[i, i])
        predicted, actual = int(cm[:, i].sum()), int(cm[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "support": actual}
        if actual:
            f1s.append(f1)
    return {
        "n": int(len(y_true)),
        "accuracy": round(float(np.mean(y_pred == y_true)), 4) if len(y_true) else None,
        "macro_f1": round(float(np.mean(f1s)), 4) if f1s else None,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


# -- files -----------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file in the same folder."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, umask_mode(0o666))  # mkstemp's 0600 would hide the run from other users
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8 (surrogates): \u-escape it
        text = json.dumps(value, indent=2, ensure_ascii=True)
    write_atomic(path, text + "\n")


def write_history_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """One row per epoch: stage, epoch, loss, accuracy, val_loss, val_accuracy."""
    columns = ["stage", "epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    write_atomic(path, buffer.getvalue())


# -- plots -----------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    write_atomic(path, buffer.getvalue())


def plot_history(rows: list[dict[str, Any]], path: Path) -> None:
    """Learning curves: loss and accuracy per epoch, train and validation."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    steps = list(range(1, len(rows) + 1))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [r.get(prefix + metric) for r in rows]
            if any(v is not None for v in values):
                ax.plot(steps, [np.nan if v is None else v for v in values], style, label=(prefix or "train_") + metric)
        ax.set_xlabel("epoch (head, then fine-tuning)")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], labels: Sequence[str], path: Path, title: str) -> None:
    """A confusion-matrix heat map with counts (rows: true class, columns: predicted)."""
    plt = _pyplot()
    cm = np.asarray(matrix)
    side = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = cm.max() / 2 if cm.size else 0
    for (i, j), value in np.ndenumerate(cm):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > threshold else "black", fontsize=8)
    _save(fig, path)
    plt.close(fig)


# -- evaluating a run ------------------------------------------------------------------


def load_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, list[list[Any]]]]:
    """(run.json, splits.json) of a run directory; `ModelError` when it is not one."""
    try:
        run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        splits = json.loads((run_dir / "splits.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{run_dir} is not a complete tledge run (run.json/splits.json unreadable: {exc}); pass a folder made by tledge train") from None
    return run, splits


def decode_batch(paths: Sequence[str], size: tuple[int, int], policy: ResizePolicy, threads: int | None = None) -> tuple[np.ndarray, list[int]]:
    """Decode and resize `paths` as the device does; returns (images, indices decoded)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(path: str) -> np.ndarray | None:
        try:
            return resize_rgb(load_rgb(path), size, policy)
        except ImageError:
            return None

    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        decoded = list(pool.map(one, paths))
    kept = [i for i, img in enumerate(decoded) if img is not None]
    if not kept:
        return np.zeros((0, size[0], size[1], 3), dtype=np.uint8), kept
    return np.stack([decoded[i] for i in kept]), kept


def predict_images(model: Any, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Softmax outputs of a Keras model on uint8 images, through a tf.function."""
    from trainer.deps import require_tensorflow

    tf = require_tensorflow()
    fn = tf.function(lambda x: model(x, training=False))
    outs = [fn(tf.constant(images[i : i + batch], dtype=tf.float32)).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(outs) if outs else np.zeros((0, model.output_shape[-1]), dtype=np.float32)


def evaluate_run(run_dir: str | os.PathLike[str], split: str = "test") -> dict[str, Any]:
    """Recompute the metrics of a run's `model.keras` on one of its splits."""
    from trainer.deps import require_keras

    run_dir = Path(run_dir)
    run, splits = load_run(run_dir)
    if split not in splits:
        raise DataError(f"split {split!r} is not in {run_dir}/splits.json; choose one of {sorted(splits)}")
    entries = splits[split]
    if not entries:
        raise DataError(f"the {split} split of {run_dir} has no images; choose another with --split")
    keras = require_keras()
    try:
        model = keras.saving.load_model(run_dir / "model.keras", compile=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load {run_dir}/model.keras ({exc}); re-run tledge train") from None
    height, width = run["image_size"]
    images, kept = decode_batch([e[0] for e in entries], (height, width), ResizePolicy(run.get("resize", "center_crop")))
    y_true = np.array([entries[i][1] for i in kept], dtype=np.int64)
    metrics = classification_metrics(y_true, predict_images(model, images), run["labels"])
    metrics["split"] = split
    metrics["unreadable"] = [entries[i][0] for i in range(len(entries)) if i not in set(kept)]
    return metrics
