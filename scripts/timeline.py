#!/usr/bin/env python
"""A tledge command with wall-clock marks around named functions: where one run's time goes,
without a profiler's overhead.

    .venv/bin/python scripts/timeline.py --wrap trainer.export.exporter:_load_keras \\
        --wrap trainer.export.convert:_convert [--output NAME] -- export RUN --quantize --out B

Each --wrap MODULE:FUNCTION (or MODULE:CLASS.METHOD) is replaced, before the command runs,
by a wrapper that records when each call began and how long it took (seconds from this
script's start; replace where the function is looked up: a module that imported it by name
keeps its own reference, so name that module). Run from the source tree to measure (its
root on sys.path first). With --output, the marks go to scripts/results/NAME.json with
the command, the tree's commit and the CPU; else as JSON on stdout.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from timed_cli import lscpu_model, tree_commit

START = time.perf_counter()
TREE = Path.cwd()


def wrap(target: str, marks: list[dict[str, Any]]) -> None:
    module_name, _, attribute = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    function = getattr(owner, name)

    @functools.wraps(function)
    def marked(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            marks.append({"function": target, "began_s": round(began - START, 3), "took_s": round(time.perf_counter() - began, 3)})

    setattr(owner, name, marked)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wrap", action="append", default=[], help="MODULE:FUNCTION to time (repeatable)")
    parser.add_argument("--output", help="file name under scripts/results/ (without .json)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the tledge command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    sys.path.insert(0, str(TREE))
    marks: list[dict[str, Any]] = []
    for target in args.wrap:
        wrap(target, marks)
    from edge.cli import main as cli

    sys.argv = ["tledge", *command]
    code = 0
    try:
        cli()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    total = round(time.perf_counter() - START, 3)
    result = {"command": "tledge " + " ".join(command), "exit_code": code, "tree_commit": tree_commit(TREE), "cpu": lscpu_model(), "cores": os.cpu_count(),
              "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "total_s": total, "marks": sorted(marks, key=lambda m: m["began_s"])}
    if args.output:
        out = Path(__file__).resolve().parent / "results" / f"{args.output}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
    else:
        print(json.dumps(result, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
