#!/usr/bin/env python
"""int8 top-1 agreement of the calibration guard's model (tests/export/test_calibration_guard.py)
per calibration count and per source of bias correction's means, on this machine.

Trains the guard's run once (ImageNet MobileNetV2 at 224 px, a head on at most --subset
images per class and split of ../shared's clothing-small, disk cache, TFLite feature engine),
then exports it at each --counts value, with the means from the run's backbone file and,
once that file is moved away, from the Keras pass. Agreement is val + test pooled.

    .venv/bin/python scripts/guard_agreement_sweep.py [--subset 60] [--counts 32 64 128 256] [--key NAME]

Merges its rows under --key into scripts/results/guard_agreement_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "tests" / "export"))
sys.path.append(str(ROOT / "scripts"))

from timed_cli import WEIGHTS, lscpu_model  # noqa: E402

RESULT = ROOT / "scripts" / "results" / "guard_agreement_sweep.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", type=int, default=60, help="images per class and split (0: the whole set)")
    parser.add_argument("--counts", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--weights", type=Path, default=Path(os.environ.get("TLEDGE_WEIGHTS") or WEIGHTS))
    parser.add_argument("--key", default="subset60")
    args = parser.parse_args()

    from export_helpers import train_on_clothing

    from trainer.export import ExportOptions, export

    work = Path(tempfile.mkdtemp(prefix="tledge-guard-sweep-"))
    try:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        trained = train_on_clothing(ROOT.parent / "shared", args.weights, work / "runs", "guard", subset=args.subset or None,
                                    image_size=224, cache_dir=work / "cache")
        backbone = next((work / "cache" / "backbones").glob("*.tflite"))
        rows = []
        for means_from in ("tflite", "keras"):
            if means_from == "keras":
                shutil.move(backbone, work / "moved.tflite")
            for count in args.counts:
                options = replace(ExportOptions.for_int8(out=work / f"bundle-{means_from}-{count}", accept_drop=True), calibration_images=count)
                report = export(trained.run_dir, options, float_features=trained.verification_features).report
                pooled = report["splits"]["all"]
                rows.append({"means_from": report["bias_correction_means"], "calibration_images": count, "images": pooled["images"],
                             "top1_agreement": pooled["top1_agreement"], "drop_points": pooled["drop_points"]})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    part = {"command": "scripts/guard_agreement_sweep.py " + " ".join(sys.argv[1:]), "date_utc": started, "cpu": lscpu_model(),
            "cores": os.cpu_count(), "subset": args.subset, "rows": rows}
    result = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    result[args.key] = part
    RESULT.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
