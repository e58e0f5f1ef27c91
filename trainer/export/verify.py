"""Verify an exported model the way a device runs it, against the float Keras model.

The .tflite is loaded with `edge.bundle.load_model_info` and run by
`edge.classifier.Classifier` (decode -> resize -> quantize -> invoke -> dequantize), the
device's own code. The Keras model sees the same decoded, resized pixels as float32.
Accuracies are fractions (0..1); drops and per-class deltas are percentage points.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import load_model_info
from edge.classifier import Classifier
from edge.errors import ImageError
from edge.images import load_rgb
from edge.preprocess import resize_rgb
from trainer.errors import ExportError
from trainer.stats import format_json, wilson

Sample = tuple[str, int]  # (image path, class index)
_BATCH = 32  # images per Keras forward pass


class VerificationFailed(ExportError):
    """The .tflite lost more accuracy than allowed. `report` holds the numbers."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class SplitPredictions:
    """Top-1 predictions of both models on one split."""

    truth: np.ndarray  # (n,) int class indices
    keras: np.ndarray  # (n,) int
    tflite: np.ndarray  # (n,) int
    total_ms: np.ndarray  # (n,) preprocess + invoke + postprocess, ms
    invoke_ms: np.ndarray  # (n,) interpreter invoke only, ms
    scores: np.ndarray  # (n, classes) the .tflite's dequantized scores (for thresholds)


FloatTop = Callable[[str, np.ndarray], np.ndarray]
"""(split name, model-size images (n, H, W, 3) uint8) -> the float model's top-1 class per image."""


def keras_float_top(model: Any) -> FloatTop:
    """The float side from the Keras model: one compiled forward pass per batch."""
    from trainer.deps import require_tensorflow

    tf = require_tensorflow("tledge export")
    compiled = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)])

    def top(split: str, images: np.ndarray) -> np.ndarray:
        out = [np.asarray(compiled(images[i : i + _BATCH].astype(np.float32))).argmax(axis=1) for i in range(0, len(images), _BATCH)]
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

    return top


def _predict_split(classifier: Classifier, images: np.ndarray, truth: np.ndarray, float_top: np.ndarray) -> SplitPredictions:
    """The device's classifier on each model-size image, timed; the float answers given."""
    tflite_top, total_ms, invoke_ms, all_scores = [], [], [], []
    for frame_rgb in images:
        start = time.perf_counter()
        tensor = classifier.preprocess(frame_rgb)
        mid = time.perf_counter()
        scores = classifier.invoke(tensor)
        top = classifier.postprocess(scores, top_k=1)
        end = time.perf_counter()
        tflite_top.append(top[0][0])
        all_scores.append(np.asarray(scores, dtype=np.float64).reshape(-1))
        total_ms.append((end - start) * 1000.0)
        invoke_ms.append((end - mid) * 1000.0)
    return SplitPredictions(
        truth=np.asarray(truth, dtype=np.int64),
        keras=np.asarray(float_top, dtype=np.int64),
        tflite=np.asarray(tflite_top, dtype=np.int64),
        total_ms=np.asarray(total_ms, dtype=np.float64),
        invoke_ms=np.asarray(invoke_ms, dtype=np.float64),
        scores=np.stack(all_scores) if all_scores else np.zeros((0, 0)),
    )


def _decode_split(items: Sequence[Sample], size: tuple[int, int], resize: Any) -> np.ndarray:
    frames = []
    for path, _ in items:
        try:
            frames.append(resize_rgb(load_rgb(path), size, resize))
        except ImageError as exc:
            raise ExportError(f"Verification image unusable: {exc}. Fix or remove it and re-train") from None
    return np.stack(frames) if frames else np.zeros((0, *size, 3), np.uint8)


def _concat(parts: Sequence[SplitPredictions]) -> SplitPredictions:
    return SplitPredictions(*(np.concatenate([getattr(p, f) for p in parts]) for f in SplitPredictions.__dataclass_fields__))


def _accuracy(pred: np.ndarray, truth: np.ndarray) -> float | None:
    return float(np.mean(pred == truth)) if truth.size else None


def _interval(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any] | None:
    """The 95 % Wilson interval of the share of `pred` equal to `truth` (None when empty)."""
    return wilson(int(np.sum(pred == truth)), int(truth.size)).to_json() if truth.size else None


def _split_metrics(p: SplitPredictions) -> dict[str, Any]:
    float_acc, tflite_acc = _accuracy(p.keras, p.truth), _accuracy(p.tflite, p.truth)
    return {
        "images": int(p.truth.size),
        "float_accuracy": float_acc,
        "tflite_accuracy": tflite_acc,
        "top1_agreement": _accuracy(p.tflite, p.keras),
        "drop_points": None if float_acc is None else round((float_acc - tflite_acc) * 100.0, 4),
        # 95 % Wilson intervals with their n, for every proportion above
        "float_accuracy_interval": _interval(p.keras, p.truth),
        "tflite_accuracy_interval": _interval(p.tflite, p.truth),
        "top1_agreement_interval": _interval(p.tflite, p.keras),
    }


def _per_class(p: SplitPredictions, labels: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for index, label in enumerate(labels):
        mask = p.truth == index
        float_acc, tflite_acc = _accuracy(p.keras[mask], p.truth[mask]), _accuracy(p.tflite[mask], p.truth[mask])
        rows.append(
            {
                "label": label,
                "images": int(mask.sum()),
                "float_accuracy": float_acc,
                "tflite_accuracy": tflite_acc,
                "delta_points": None if float_acc is None else round((tflite_acc - float_acc) * 100.0, 4),
                "float_accuracy_interval": _interval(p.keras[mask], p.truth[mask]),
                "tflite_accuracy_interval": _interval(p.tflite[mask], p.truth[mask]),
            }
        )
    return rows


def verify_detailed(
    model: Any,
    bundle: Path,
    splits: dict[str, Sequence[Sample]],
    labels: Sequence[str],
    threads: int | None = None,
    images: Callable[[str], np.ndarray] | None = None,
    float_top: FloatTop | None = None,
) -> tuple[dict[str, Any], dict[str, SplitPredictions]]:
    """Run the bundle at `bundle` and the float model over `splits` (e.g. val and test).

    Returns the report and each split's predictions (the .tflite's scores feed the thresholds).

    `images(split)` gives the split's images decoded and resized to the model's input
    (default: decoded here); `float_top` gives the float model's answers (default: the
    Keras `model` on those images). Latency is the device's preprocessing of a model-size
    image (quantization) plus invoke and postprocessing; decoding and resizing are not in it.
    """
    if not any(splits.values()):
        raise ExportError("The run has no val or test images to verify the export on; re-train with a val/test split")
    info = load_model_info(bundle)
    classifier = Classifier(info, threads=threads)
    size = classifier.input_size
    images = images or (lambda split: _decode_split(splits[split], size, info.resize))
    float_top = float_top or keras_float_top(model)
    done = {}
    for name, items in splits.items():
        if items:
            pixels = images(name)
            truth = np.asarray([label for _, label in items], np.int64)
            done[name] = _predict_split(classifier, pixels, truth, float_top(name, pixels))
    pooled = _concat(list(done.values()))
    report_splits = {name: _split_metrics(p) for name, p in done.items()}
    report_splits["all"] = _split_metrics(pooled)
    return {
        "model_size_bytes": len(info.model_bytes),
        "backend": classifier.backend.name,
        "threads": threads,
        "latency_ms": {
            "mean": round(float(pooled.total_ms.mean()), 3),
            "median": round(float(np.median(pooled.total_ms)), 3),
            "invoke_mean": round(float(pooled.invoke_ms.mean()), 3),
        },
        "splits": report_splits,
        "per_class": _per_class(pooled, labels),
    }, done


def bundle_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The verified numbers recorded in the bundle's tledge.json."""
    splits = report["splits"]
    main = splits.get("test") or splits["all"]
    metrics = {
        "evaluated_on": "test" if "test" in splits else "+".join(k for k in splits if k != "all"),
        "float_test_accuracy": main["float_accuracy"],
        "tflite_test_accuracy": main["tflite_accuracy"],
        "top1_agreement": main["top1_agreement"],
        "test_images": main["images"],
        "mean_latency_ms": report["latency_ms"]["mean"],
    }
    if "val" in splits:
        metrics["float_val_accuracy"] = splits["val"]["float_accuracy"]
        metrics["tflite_val_accuracy"] = splits["val"]["tflite_accuracy"]
    return metrics


def judge(report: dict[str, Any], max_drop: float, accept_drop: bool) -> dict[str, Any]:
    """Add the verdict to `report` (a new dict); raise `VerificationFailed` on a refused drop.

    The drop is measured on val + test pooled (more images, less noise than either).
    """
    drop = report["splits"]["all"]["drop_points"]
    suffered = sorted((row for row in report["per_class"] if (row["delta_points"] or 0.0) < 0), key=lambda r: r["delta_points"])
    passed = drop <= max_drop
    verdict = {
        **report,
        "max_drop_points": max_drop,
        "drop_points": drop,
        "passed": passed,
        "accepted_drop": bool(accept_drop and not passed),
        "suffered": [row["label"] for row in suffered],
    }
    if not passed and not accept_drop:
        worst = ", ".join(f"{row['label']} ({row['delta_points']:+.1f})" for row in suffered[:5]) or "none singled out"
        all_ = report["splits"]["all"]
        raise VerificationFailed(
            f"The exported model lost {drop:.2f} accuracy points (float {format_json(all_['float_accuracy_interval'])} -> "
            f".tflite {format_json(all_['tflite_accuracy_interval'])} on val+test), more than the allowed {max_drop:g}. "
            f"Classes that suffered most: {worst}. Try more --calibration-images, another --mode "
            "(float16 or dynamic keep more accuracy), or accept it with --accept-drop",
            verdict,
        )
    return verdict
