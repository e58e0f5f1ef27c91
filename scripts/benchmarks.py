#!/usr/bin/env python
"""Run every benchmark script and regenerate BENCHMARKS.md (issue 7).

    scripts/benchmarks.py                           # all of them, full size (about an hour here)
    scripts/benchmarks.py --quick --subset 300      # smoke figures, passed to the scripts that take them
    scripts/benchmarks.py --only inference --only startup
    scripts/benchmarks.py --from-json               # rebuild BENCHMARKS.md from scripts/results/

Sections, in running order (later ones reuse the exporter's bundles when they exist):

    train      scripts/bench_train.py      -> scripts/out/bench_train.json
    export     scripts/bench_export.py     -> scripts/out/bench_export.json
    inference  scripts/bench_inference.py  -> scripts/out/bench_inference.json
    pipeline   scripts/bench_pipeline.py   -> scripts/out/bench_pipeline.json
    startup    scripts/bench_startup.py    -> scripts/out/bench_startup.json
    soak       scripts/soak.py             -> scripts/out/soak.json

`--quick`, `--subset N` and `--model PATH` go to each script whose --help offers them.

The scripts write scratch JSON to scripts/out/ (git-ignored). A run's JSON becomes the
section's cited result file by being copied to scripts/results/ (committed): after each
successful section here, and with `--from-json` for JSON newer than the cited file (a
script run on its own). Each script's exact command line, exit code and wall time are
kept in scripts/results/benchmarks_runs.json. A section with no result file keeps
whatever BENCHMARKS.md already holds between its markers, marked as not re-derivable.
Explanations are hand-written in scripts/results/notes/<section>.md and goals are
stated in scripts/results/goals.json (see scripts/bench_report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_report as report  # noqa: E402

BENCHMARKS_MD = bc.ROOT / "BENCHMARKS.md"
RUNS_JSON = report.RESULTS / "benchmarks_runs.json"
#: Progress lines worth echoing: timestamps, the scripts' own notes, errors.
PROGRESS = re.compile(r"^(\[\d\d:\d\d:\d\d\]|run:|  \[|Traceback|\w*Error|error:)")


@dataclass(frozen=True)
class Section:
    """One benchmark script and the JSON it writes."""

    name: str
    script: str  # relative to the repo root
    json_name: str  # scripts/out/<json_name>.json, cited as scripts/results/<json_name>.json
    quick_args: tuple[str, ...] = ()  # for scripts without a --quick flag


SECTIONS = (
    Section("train", "scripts/bench_train.py", "bench_train"),
    Section("export", "scripts/bench_export.py", "bench_export"),
    Section("inference", "scripts/bench_inference.py", "bench_inference"),
    Section("pipeline", "scripts/bench_pipeline.py", "bench_pipeline"),
    Section("startup", "scripts/bench_startup.py", "bench_startup"),
    Section("soak", "scripts/soak.py", "soak", quick_args=("--frames", "3000", "--warmup", "500")),
)


def _offers(script: Path, flag: str) -> bool:
    """Whether `script --help` mentions `flag` (so it can be passed through)."""
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=bc.ROOT, timeout=300)
    return done.returncode == 0 and flag in done.stdout


def section_command(section: Section, args: argparse.Namespace) -> list[str]:
    script = bc.ROOT / section.script
    cmd = [section.script]
    if args.quick:
        cmd += ["--quick"] if _offers(script, "--quick") else list(section.quick_args)
    if args.subset is not None and _offers(script, "--subset"):
        cmd += ["--subset", str(args.subset)]
    if args.model and section.name in ("inference", "pipeline", "startup"):
        for model in args.model:
            cmd += ["--model", model]
    return cmd


def run_section(section: Section, cmd: list[str]) -> dict[str, Any]:
    """Run one script. Its stdout (the JSON) is dropped here (the script writes the file);
    its stderr goes to scripts/out/<name>.log, and its progress lines are echoed."""
    shown = " ".join(shlex.quote(c) for c in cmd)
    bc.log(f"== {section.name}: {shown}")
    log_path = bc.OUT / f"{section.json_name}.log"
    start = time.monotonic()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log_path, "w") as log_file, subprocess.Popen(
        [sys.executable, *cmd], cwd=bc.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        for line in proc.stderr or ():
            log_file.write(line)
            if PROGRESS.match(line):  # the runtime's own INFO chatter stays in the log
                print(f"   {line}", end="", file=sys.stderr, flush=True)
    record = {"command": shown, "rc": proc.returncode, "wall_s": round(time.monotonic() - start, 1), "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    bc.log(f"== {section.name}: exit {proc.returncode} after {record['wall_s']} s (log: {log_path.relative_to(bc.ROOT)})")
    if proc.returncode != 0:
        print("".join(log_path.read_text().splitlines(keepends=True)[-15:]), file=sys.stderr)
    return record


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as stream:
        stream.write(text)
    os.replace(tmp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [s.name for s in SECTIONS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=names, help="Run only this section (repeatable); the others keep their last JSON.")
    parser.add_argument("--skip", action="append", choices=names, default=[], help="Do not run this section (repeatable).")
    parser.add_argument("--from-json", action="store_true", help="Run nothing: take newer scripts/out/*.json into scripts/results/, rebuild BENCHMARKS.md from scripts/results/.")
    parser.add_argument("--quick", action="store_true", help="Passed to the scripts: small, fast runs (smoke figures).")
    parser.add_argument("--subset", type=int, help="Passed to the scripts that take it (training images per split).")
    parser.add_argument("--model", action="append", default=[], help="Passed to inference/pipeline/startup (repeatable).")
    parser.add_argument("--output", type=Path, default=BENCHMARKS_MD, help="Where to write the report.")
    return parser.parse_args(argv)


def cite(json_name: str) -> bool:
    """Copy scripts/out/<json_name>.json to scripts/results/ (the cited file) when it is
    newer than the cited one or none is cited yet; whether it was copied."""
    fresh, cited = bc.OUT / f"{json_name}.json", report.RESULTS / f"{json_name}.json"
    if not fresh.is_file() or _read_json(fresh) is None:
        return False
    if cited.is_file() and cited.stat().st_mtime >= fresh.stat().st_mtime:
        return False
    report.RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copy2(fresh, cited)
    bc.log(f"cited {cited.relative_to(bc.ROOT)} (commit it with BENCHMARKS.md)")
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bc.OUT.mkdir(parents=True, exist_ok=True)
    report.RESULTS.mkdir(parents=True, exist_ok=True)
    runs = _read_json(RUNS_JSON) or {}
    failed = []
    invocation = "scripts/benchmarks.py" + "".join(f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))
    if not args.from_json:
        runs["_last_run"] = {"command": invocation, "started_utc": _utc(time.time())}
        for section in SECTIONS:
            if (args.only and section.name not in args.only) or section.name in args.skip:
                continue
            if not (bc.ROOT / section.script).is_file():
                bc.log(f"== {section.name}: {section.script} is not there yet; keeping what BENCHMARKS.md has")
                continue
            runs[section.name] = {**run_section(section, section_command(section, args)), "run_by": invocation}
            if runs[section.name]["rc"] != 0:
                failed.append(section.name)
            else:
                cite(section.json_name)
            _write_atomic(RUNS_JSON, json.dumps(runs, indent=2) + "\n")
        runs["_last_run"]["finished_utc"] = _utc(time.time())
        _write_atomic(RUNS_JSON, json.dumps(runs, indent=2) + "\n")
    else:
        for section in SECTIONS:  # JSON written by a script run outside this command
            if cite(section.json_name):
                path = report.RESULTS / f"{section.json_name}.json"
                recorded = _read_json(path)
                command = recorded.get("command") if isinstance(recorded, dict) else None  # the scripts that record their own
                runs[section.name] = {"command": f"{command} (run on its own)" if command else f"{section.script} (run on its own; its flags were not recorded)",
                                      "rc": 0, "finished_utc": _utc(path.stat().st_mtime)}
        cite(report.MORE_EPOCHS)
        _write_atomic(RUNS_JSON, json.dumps(runs, indent=2) + "\n")
    results = {s.name: _read_json(report.RESULTS / f"{s.json_name}.json") for s in SECTIONS}
    if isinstance(results.get("train"), dict):
        results["train"]["_more_epochs"] = _read_json(report.RESULTS / f"{report.MORE_EPOCHS}.json")
    old = args.output.read_text() if args.output.is_file() else ""
    text = report.render(results, runs, old, invocation, bc.machine_info(), report.load_notes(), report.load_goals())
    _write_atomic(args.output, text)
    bc.log(f"wrote {args.output}")
    if failed:
        bc.log(f"failed: {', '.join(failed)} (their sections show the last good figures, marked)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
