#!/usr/bin/env python
"""Start-up of `tledge predict` and of importing the CLI (issue 12: the CLI root moved
edge-side and imports nothing heavy until a command runs).

    .venv/bin/python scripts/measure_cli_startup.py --label before --output scripts/results/cli_startup_before.json

Two measurements, each a fresh process, repeated `--reps` times, median reported:

- ``predict_wall_s``: wall time of `tledge predict MODEL IMAGE --labels LABELS` (the
  installed command), from spawn to exit;
- ``import_cli_s``: wall time of `python -c "import <cli module>"` (what `tledge --help`
  pays before any command runs), and the modules it loads that are heavy (cv2, numpy,
  tensorflow) from `python -X importtime`.

Records the CPU model and the load average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path("/work/shared")
HEAVY = ("cv2", "numpy", "tensorflow", "ai_edge_litert", "PIL", "trainer.features", "keras")


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _heavy_imports(module: str) -> list[str]:
    """Top-level heavy packages that `import module` loads (from -X importtime)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True, check=True)
    seen = set()
    for line in proc.stderr.splitlines():
        name = line.rsplit("|", 1)[-1].strip()
        for heavy in HEAVY:
            if name == heavy:
                seen.add(heavy)
    return sorted(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="before / after")
    parser.add_argument("--cli-module", default=None, help="module the entry point lives in (default: from the installed script)")
    parser.add_argument("--model", type=Path, default=SHARED / "models/mobilenet_v2_1.0_224_quant.tflite")
    parser.add_argument("--labels", type=Path, default=SHARED / "models/imagenet_labels.txt")
    parser.add_argument("--image", type=Path, default=SHARED / "images/chelsea.png")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    tledge = Path(sys.executable).parent / "tledge"
    script = tledge.read_text()
    module = args.cli_module or next(
        line.split("from ", 1)[1].split(" import", 1)[0] for line in script.splitlines() if line.startswith("from ") and " import main" in line
    )
    predict = [str(tledge), "predict", str(args.model), str(args.image), "--labels", str(args.labels)]
    importing = [sys.executable, "-c", f"import {module}"]
    _timed(predict)  # warm the page cache once, untimed
    predict_s, import_s = [], []
    load_start = os.getloadavg()
    for _ in range(args.reps):  # interleaved, so a load spike hits both alike
        predict_s.append(_timed(predict))
        import_s.append(_timed(importing))
    result = {
        "label": args.label,
        "command": " ".join(predict),
        "cli_module": module,
        "reps": args.reps,
        "predict_wall_s": {"median": round(statistics.median(predict_s), 3), "all": [round(v, 3) for v in predict_s]},
        "import_cli_s": {"median": round(statistics.median(import_s), 3), "all": [round(v, 3) for v in import_s]},
        "heavy_modules_on_import": _heavy_imports(module),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "loadavg_start": [round(v, 2) for v in load_start],
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
