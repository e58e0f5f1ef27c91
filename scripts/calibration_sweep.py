#!/usr/bin/env python
"""int8 agreement with the float model vs the number of calibration images.

Exports one training run with the real exporter (bias correction on, verification on
val + test with the edge runtime) once per calibration count and records top-1
agreement, accuracy drop and export wall time for each.

    .venv/bin/python scripts/calibration_sweep.py RUN_DIR [--counts 32 64 100 150 300] [--output NAME]

Writes scripts/results/<NAME>.json (default calibration_sweep).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--counts", type=int, nargs="+", default=[32, 64, 100, 150, 300])
    parser.add_argument("--output", default="calibration_sweep")
    args = parser.parse_args()
    from trainer.export import ExportOptions, export

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.counts:
            start = time.perf_counter()
            options = ExportOptions.for_int8(out=Path(tmp) / f"n{count}", calibration_images=count, accept_drop=True)
            report = export(args.run_dir, options).report
            row = {"calibration_images": report["calibration_images"], "export_s": round(time.perf_counter() - start, 1),
                   "load_avg_1m": round(os.getloadavg()[0], 2)}
            for split, m in report["splits"].items():
                row[f"{split}_agreement"] = m["top1_agreement"]
                row[f"{split}_drop_points"] = m["drop_points"]
                row[f"{split}_images"] = m["images"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"command": "scripts/calibration_sweep.py " + " ".join(sys.argv[1:]), "run_dir": str(args.run_dir),
              "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    out = ROOT / "scripts" / "results" / f"{args.output}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
