#!/usr/bin/env python
"""Start-up of `tledge predict` and of importing the CLI (issue 12: the CLI root moved
edge-side and imports nothing heavy until a command runs).

    # the installed `tledge` command only:
    .venv/bin/python scripts/measure_cli_startup.py --output scripts/results/cli_startup_after.json
    # two source trees interleaved, repetition by repetition (a shared machine's load hits both alike):
    git archive 501fae0 | tar -x -C /tmp/tledge-before
    .venv/bin/python scripts/measure_cli_startup.py --variant before=/tmp/tledge-before:trainer.cli \\
        --variant after=.:edge.cli --output scripts/results/cli_startup_compare.json

Each measurement is a fresh process, repeated `--reps` times; medians are reported:

- ``predict_wall_s``: wall time of `tledge predict MODEL IMAGE --labels LABELS`, spawn to exit;
- ``import_cli_s``: wall time of `python -c "import <cli module>"` (what any command pays
  before it runs), and the heavy packages that import loads (`python -X importtime`).

A variant NAME=TREE:MODULE runs `main()` of MODULE from TREE (the working directory and
first on PYTHONPATH: the same as the console script of that tree). Records the CPU model and the load average.
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
HEAVY = ("cv2", "numpy", "tensorflow", "ai_edge_litert", "PIL", "keras", "rich")


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=env.get("PYTHONPATH"))
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


def _heavy_imports(module: str, env: dict[str, str]) -> list[str]:
    """Top-level heavy packages that `import module` loads (from -X importtime)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True, check=True, env=env, cwd=env.get("PYTHONPATH"))
    names = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    return sorted(h for h in HEAVY if h in names)


def _installed_module() -> str:
    script = (Path(sys.executable).parent / "tledge").read_text()
    return next(line.split("from ", 1)[1].split(" import", 1)[0] for line in script.splitlines() if line.startswith("from ") and " import main" in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", default=[], help="NAME=TREE:MODULE (repeatable); default: the installed tledge")
    parser.add_argument("--model", type=Path, default=SHARED / "models/mobilenet_v2_1.0_224_quant.tflite")
    parser.add_argument("--labels", type=Path, default=SHARED / "models/imagenet_labels.txt")
    parser.add_argument("--image", type=Path, default=SHARED / "images/chelsea.png")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    variants = []
    for spec in args.variant or [f"installed=:{_installed_module()}"]:
        name, rest = spec.split("=", 1)
        tree, module = rest.rsplit(":", 1)
        env = dict(os.environ)
        if tree:
            env["PYTHONPATH"] = str(Path(tree).resolve())
        launcher = f"import sys; from {module} import main; sys.argv[0] = 'tledge'; main()"
        predict = [sys.executable, "-c", launcher, "predict", str(args.model), str(args.image), "--labels", str(args.labels)]
        variants.append({"name": name, "tree": tree, "module": module, "env": env, "predict": predict, "import": [sys.executable, "-c", f"import {module}"], "p": [], "i": []})
    for v in variants:
        _timed(v["predict"], v["env"])  # warm the page cache once, untimed
    load_start = os.getloadavg()
    for _ in range(args.reps):  # interleaved
        for v in variants:
            v["p"].append(_timed(v["predict"], v["env"]))
            v["i"].append(_timed(v["import"], v["env"]))
    result = {
        "command": f"tledge predict {args.model} {args.image} --labels {args.labels}",
        "reps": args.reps,
        "variants": {
            v["name"]: {
                "tree": v["tree"] or "installed",
                "cli_module": v["module"],
                "predict_wall_s": {"median": round(statistics.median(v["p"]), 3), "all": [round(x, 3) for x in v["p"]]},
                "import_cli_s": {"median": round(statistics.median(v["i"]), 3), "all": [round(x, 3) for x in v["i"]]},
                "heavy_modules_on_import": _heavy_imports(v["module"], v["env"]),
            }
            for v in variants
        },
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
