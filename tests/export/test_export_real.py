"""int8 export of a real model: ImageNet MobileNetV2 + a head trained on real clothing photos.

Slow (real weights, ../shared data): skipped when ../shared is absent. A subset keeps it
near a minute; the full-dataset numbers are in BENCHMARKS.md (scripts/bench_export.py).
"""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_int8_export_of_a_real_model_passes_the_default_gate(shared, imagenet_weights, tmp_path):
    data = shared / "datasets" / "clothing-small"
    if not data.is_dir():
        pytest.skip(f"{data} is absent")
    from trainer.config import CacheMode, DataOptions, HyperParams, ModelOptions, RuntimeOptions, TrainOptions, WeightsKind, WeightsSpec
    from trainer.export import ExportOptions, export
    from trainer.export.tflite_inspect import inspect_tflite
    from trainer.train import train

    options = TrainOptions(
        data=DataOptions(data, subset=12),  # 12 images per class and split
        model=ModelOptions(image_size=160, weights=WeightsSpec(WeightsKind.FILE, imagenet_weights)),
        hyper=HyperParams(augment_views=0),
        runtime=RuntimeOptions(cache=CacheMode.MEMORY, quiet=True),
        out_dir=tmp_path / "runs",
        name="clothing-subset",
        seed=0,
    )
    run_dir = train(options).run_dir
    # Default gate (2 points on val + test): export() raises if int8 loses more.
    result = export(run_dir, ExportOptions.for_int8(out=tmp_path / "bundle", calibration_images=120))
    report = result.report
    pooled = report["splits"]["all"]
    assert pooled["images"] >= 200
    assert pooled["float_accuracy"] > 0.5, "the real-weights model should be far above chance (10 classes)"
    # Plain post-training int8 of MobileNetV2 agrees with float on ~95% of the full test
    # set at 224 px (BENCHMARKS.md) and on 87.5% of this 160 px subset: its first depthwise
    # layer amplifies activation rounding (QuantizationDebugger: RMSE 1.3 steps vs ~0.3).
    assert pooled["top1_agreement"] >= 0.85
    assert report["passed"] and report["calibration_images"] == 120 and not report["warnings"]
    summary = inspect_tflite(result.model_path.read_bytes())
    assert not summary.custom_ops and "FLOAT32" not in summary.tensor_dtypes
    assert (summary.inputs[0].dtype, summary.inputs[0].scale, summary.inputs[0].zero_point) == ("UINT8", 1.0, 0)
