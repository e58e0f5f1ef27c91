"""The default int8 calibration count is not what keeps top-1 agreement below 98.5 % on a real set.

Issue 13 cut the calibration images (the calibrator costs ~80 ms per image on 2 cores);
scripts/results/calibration_sweep_clothing.json measured agreement vs count on the full
clothing-small set. This test fails if the default is cut below what keeps agreement at
98.5 % on real photos: ImageNet MobileNetV2 at 224 px, a head trained on a clothing-small
subset, exported with the default calibration count and bias correction, verified on
val + test pooled with the edge runtime.

Agreement at 98.5 % sits inside the noise of float rounding: the same recipe gave 98.5 %
or more on the Xeon machines and 97.6-98.35 % on an AMD EPYC whatever the count (32 to
256 images; scripts/results/guard_agreement_sweep.json, BENCHMARKS.md section 9). So where the default falls short,
an export with REFERENCE_FACTOR times as many images decides: if that one reaches the bar,
the cut is to blame and the test fails; if it does not, the default must stay within
MAX_SHORTFALL of it. Both ways of making the int8 file are held to this: from the run's
float backbone file and head, its bias correction's statistics measured on that file (the
default with a disk cache: trainer/export/backbone_file.py, trainer/export/input_means.py),
and from the Keras model with the statistics of a Keras pass (no backbone file). Slow (real
weights, ../shared data).
"""

from __future__ import annotations

import pytest
from export_helpers import train_on_clothing

#: The bar of issue 13 (clothing-small test agreement was 98.7 % before the cut).
MIN_AGREEMENT = 0.985
#: The reference calibration: this many times the default count of images.
REFERENCE_FACTOR = 4
#: How far below the reference the default may fall where neither reaches the bar: 1 point
#: (agreement moved by up to 0.6 points between counts of 32 to 256 images in the AMD
#: sweep, and by 0.56 points between 32 and 150 images in calibration_sweep_clothing.json).
MAX_SHORTFALL = 0.01


@pytest.mark.slow
def test_default_calibration_keeps_int8_agreement_on_real_photos(shared, imagenet_weights, tmp_path):
    from dataclasses import replace

    from trainer.export import ExportOptions, export
    from trainer.export.options import DEFAULT_CALIBRATION_IMAGES

    # at most 60 images per class and split: ~600 train, ~660 val + test
    cache = tmp_path / "cache"
    trained = train_on_clothing(shared, imagenet_weights, tmp_path / "runs", "clothing-guard", subset=60, image_size=224, cache_dir=cache)
    backbones = list((cache / "backbones").glob("*.tflite"))
    assert len(backbones) == 1

    def agreement(means_from: str, images: int) -> float:
        options = replace(ExportOptions.for_int8(out=tmp_path / f"bundle-{means_from}-{images}", accept_drop=True), calibration_images=images)
        report = export(trained.run_dir, options, float_features=trained.verification_features).report
        pooled = report["splits"]["all"]
        assert report["calibration_images"] == images and report["bias_correction"]
        assert report["bias_correction_means"] == means_from
        assert report["converted_from"] == ("backbone_file" if means_from == "tflite" else "keras")
        assert pooled["images"] >= 500 and pooled["float_accuracy"] > 0.6, "a real model far above chance (10 classes)"
        return pooled["top1_agreement"]

    for means_from in ("tflite", "keras"):
        if means_from == "keras":
            backbones[0].unlink()  # no backbone file: the Keras pass measures the means
        default = agreement(means_from, DEFAULT_CALIBRATION_IMAGES)
        if default >= MIN_AGREEMENT:
            continue
        reference = agreement(means_from, REFERENCE_FACTOR * DEFAULT_CALIBRATION_IMAGES)
        assert reference < MIN_AGREEMENT and default >= reference - MAX_SHORTFALL, (
            f"int8 agreement {default:.2%} with {DEFAULT_CALIBRATION_IMAGES} calibration images, {reference:.2%} with "
            f"{REFERENCE_FACTOR * DEFAULT_CALIBRATION_IMAGES} (bias correction's means from {means_from}): calibration was "
            "cut too far (see scripts/calibration_sweep.py)"
        )
