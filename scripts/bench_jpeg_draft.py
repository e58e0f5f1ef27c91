#!/usr/bin/env python
"""JPEG decoding for the feature pass: full decode + resize vs reduced (draft-mode) decode + resize.

Decodes clothing-small photos as they are (about 400x533) and upscaled to phone-camera
size (3000x4000, re-encoded at quality 90) into 224 px, both ways, and prints the median
ms per image and the mean absolute pixel difference of the two 224 px results.

    .venv/bin/python scripts/bench_jpeg_draft.py [--images 20]

Writes scripts/results/bench_jpeg_draft.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from edge.images import load_rgb
from edge.preprocess import resize_rgb

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "datasets" / "clothing-small" / "train" / "pants"


def timed(path: Path, min_side: int | None) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = resize_rgb(load_rgb(path, min_side=min_side), (224, 224), "center_crop")
    return (time.perf_counter() - start) * 1000.0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args()
    files = sorted(SOURCE.iterdir())[: args.images]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, scale in (("as stored (~400x533)", None), ("phone size (3000x4000)", (3000, 4000))):
            paths = []
            for f in files:
                if scale is None:
                    paths.append(f)
                    continue
                big = Path(tmp) / f.name
                Image.open(f).convert("RGB").resize(scale, Image.BICUBIC).save(big, quality=90)
                paths.append(big)
            full, draft, diff = [], [], []
            for p in paths:
                t_full, a = timed(p, None)
                t_draft, b = timed(p, 224)
                full.append(t_full)
                draft.append(t_draft)
                diff.append(float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()))
            row = {"images": label, "full_ms_median": round(statistics.median(full), 2), "draft_ms_median": round(statistics.median(draft), 2),
                   "speedup": round(statistics.median(full) / statistics.median(draft), 2), "mean_abs_pixel_diff": round(statistics.mean(diff), 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"command": "scripts/bench_jpeg_draft.py " + " ".join(os.sys.argv[1:]), "load_avg_1m": round(os.getloadavg()[0], 2),
           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    (ROOT / "scripts" / "results" / "bench_jpeg_draft.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
