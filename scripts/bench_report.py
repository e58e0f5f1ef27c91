"""BENCHMARKS.md from the committed result files (used by scripts/benchmarks.py).

Three inputs, each with one job:

- scripts/results/<script>.json: the measurements of the run each section cites
  (committed, so every figure can be re-derived). Generated text says only what these
  files show.
- scripts/results/goals.json: the goals, stated before measuring, each with the date it
  was stated and any earlier wording with the date it changed.
- scripts/results/notes/<section>.md: hand-written, dated explanations. Each names the
  run it explains (result file and its `date_utc`); it is included verbatim, and flagged
  as stale when the section now cites another run.

Each section sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; its note
follows between `<!-- note:NAME -->` markers. A section without a result file keeps its
old text, marked as not re-derivable.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import bench_common as bc

RESULTS = bc.ROOT / "scripts" / "results"
NOTES = RESULTS / "notes"
GOALS_JSON = RESULTS / "goals.json"

TITLES = {
    "train": "1. Training: tledge vs the original Keras recipe",
    "export": "2. Export fidelity per quantization mode",
    "inference": "3. Inference latency per mode, thread count and API",
    "pipeline": "4. Pipeline: `tledge run` vs a naive loop on a video",
    "startup": "5. Start-up time and peak memory",
    "soak": "6. Soak: memory and descriptors over a long run",
    "selftest": "7. Self-test tolerance: how far outputs move on another runtime",
    "events": "8. Event outputs: latency, camera-loop cost, fleet simulation",
    "photos": "9. Photos to bundle (issue 13)",
    "fine_tune": "10. Fine-tuning on cached activations",
}
#: Sections written by hand from their own committed result files (each names them in its
#: text): rendering keeps them verbatim.
HAND_WRITTEN = {"selftest", "events", "photos", "fine_tune"}
#: The result file each section cites (scripts/results/<name>.json).
RESULT_NAMES = {
    "train": "bench_train",
    "export": "bench_export",
    "inference": "bench_inference",
    "pipeline": "bench_pipeline",
    "startup": "bench_startup",
    "soak": "soak",
}


def result_file(json_name: str) -> str:
    """A result file's path as BENCHMARKS.md cites it (relative to the repo root)."""
    return f"scripts/results/{json_name}.json"

# -- small markdown helpers -----------------------------------------------------------
def table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
        return "" if v is None else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def status(met: bool | None, met_in: str | None = None) -> str:
    """MET / NOT MET / NOT MEASURED; `met_in` says in how many configurations it was met."""
    text = {True: "**MET**", False: "**NOT MET**", None: "NOT MEASURED"}[met]
    return f"{text} (met in {met_in})" if met is False and met_in else text


def goal_lines(goals: list[dict[str, Any]]) -> str:
    """One line per goal: its status and what was measured. Explanations are not generated:
    they are hand-written notes (see `Note`), so a figure's "why" never outlives its run."""
    return "\n".join(f"- {status(g.get('met'), g.get('met_in'))}: {g['goal']}. {g.get('detail', '')}".rstrip() for g in goals)


def _header(data: dict[str, Any], run: dict[str, Any] | None) -> str:
    command = data.get("command") or (run or {}).get("command") or "(command not recorded)"
    machine = data.get("machine") or {}
    when = data.get("date_utc") or (run or {}).get("finished_utc") or "?"
    load = f", load average {machine['load_avg_1m']}" if "load_avg_1m" in machine else ""
    lines = [f"Command: `{command}` — run {when}{load}."]
    if run and run.get("rc"):
        lines.append(f"\n> The latest run of this script failed (exit {run['rc']}, {run.get('finished_utc')}); the figures below are from its last successful run.")
    return "\n".join(lines)


# -- sections -----------------------------------------------------------------------------
def render_inference(d: dict[str, Any]) -> str:
    parts = []
    models = d.get("models", [])
    parts.append(table(
        ["model", "mode", "size MB", "M multiply-adds (conv + depthwise + FC)"],
        [[m["name"], m["mode"], round(m["size_bytes"] / 1e6, 2), round(m["total_macs"] / 1e6, 1)] for m in models],
    ))
    rows = [r for r in d.get("results", []) if "p50_ms" in r]
    order = {m["name"]: i for i, m in enumerate(models)}
    apis = d.get("settings", {}).get("apis", [])
    rows.sort(key=lambda r: (order.get(r["model"], 99), apis.index(r["api"]) if r["api"] in apis else 99, r["threads"]))
    macs = {m["name"]: m["total_macs"] for m in models}
    core = (d.get("machine") or {}).get("core_measured") or {}
    per_core = core.get("fp32_gmac_per_s_per_core")

    def per_cpu(r: dict[str, Any]) -> tuple[Any, Any]:
        """Multiply-adds per CPU-second (all threads), and that against one core's fp32 peak."""
        if not r.get("cpu_p50_ms") or r["model"] not in macs:
            return None, None
        rate = macs[r["model"]] / (r["cpu_p50_ms"] / 1000.0) / 1e9
        return round(rate, 1), (round(100 * rate / per_core, 1) if per_core else None)

    parts.append(table(
        ["model", "mode", "API", "threads", "p50 ms", "p90 ms", "GMAC/s at p50", "% of fp32 peak (threads' cores)", "CPU ms per invoke (p50)", "GMAC per CPU-second", "% of one core's fp32 peak"],
        [[r["model"], r["mode"], r["api"], r["threads"], r["p50_ms"], r["p90_ms"], r["gmac_per_s"], r["pct_of_fp32_peak"], r.get("cpu_p50_ms"), *per_cpu(r)] for r in rows],
    ))
    errors = [r for r in d.get("results", []) if "error" in r]
    if errors:
        parts.append("Not measured:\n" + "\n".join(f"- {r['model']} / {r['api']} / {r['threads']} thread(s): {r['error']}" for r in errors))
    parts.append(_speedups(rows))
    parts.append(_inference_findings(rows))
    s = d.get("settings", {})
    parts.append(
        f"{s.get('rounds')} interleaved rounds x {s.get('runs_per_round')} invokes per configuration; p50/p90 over all of them. "
        f"GMAC/s = counted multiply-adds / wall p50, against the fp32 peak of the threads' cores (see Machine). "
        f"CPU ms = process CPU time (all threads) per invoke: other processes' load stretches wall time but not CPU time, "
        f"so with 1 thread it is the latency of an unloaded core, and multiply-adds per CPU-second against one core's peak "
        f"is the kernels' efficiency whatever the load (with 2 threads it also pays for their synchronisation). "
        f"int8 kernels are not bound by the fp32 peak (AVX-512 VNNI does 4 int8 multiply-adds per 32-bit lane). "
        f"tflite-runtime: {d.get('tflite_runtime', {}).get('note', '?')}."
    )
    return "\n\n".join(parts)


def _ratio_text(values: list[tuple[str, float]]) -> str:
    return ", ".join(f"{name} x{value:.2f}" for name, value in values)


def _inference_findings(rows: list[dict[str, Any]]) -> str:
    """Ratios read off the table, per mode (wall p50 and CPU p50)."""
    by = {(r["mode"], r["api"], r["threads"]): r for r in rows}
    modes = list(dict.fromkeys(r["mode"] for r in rows))

    def ratio(mode: str, num: tuple[str, int], den: tuple[str, int], key: str = "p50_ms") -> float | None:
        a, b = by.get((mode, *num)), by.get((mode, *den))
        return a[key] / b[key] if a and b and a.get(key) and b.get(key) else None

    lines = []
    xnn = [(m, v) for m in modes if (v := ratio(m, ("interpreter-no-xnnpack", 1), ("interpreter", 1), "cpu_p50_ms"))]
    if xnn:
        lines.append(f"- What XNNPACK (LiteRT's default CPU delegate) is worth, 1 thread, CPU time without / with: {_ratio_text(xnn)}.")
    scale = [(m, v) for m in modes if (v := ratio(m, ("interpreter", 1), ("interpreter", 2)))]
    if scale:
        lines.append(f"- 2 threads vs 1 (Interpreter, wall p50 1t / 2t; 2.0 would be perfect scaling): {_ratio_text(scale)}.")
    comp = [(m, v) for m in modes if (v := ratio(m, ("interpreter", 1), ("compiled", 1)))]
    if comp:
        lines.append(f"- CompiledModel vs Interpreter, 1 thread (Interpreter p50 / CompiledModel p50; above 1: CompiledModel faster): {_ratio_text(comp)}.")
    legacy = [(m, v) for m in modes if (v := ratio(m, ("tflite_runtime", 1), ("interpreter", 1), "cpu_p50_ms"))]
    if legacy:
        lines.append(f"- tflite-runtime vs ai-edge-litert, 1 thread (CPU time ratio; above 1: tflite-runtime slower): {_ratio_text(legacy)}.")
    old_xnn = [(m, v) for m in modes if (v := ratio(m, ("tflite_runtime-no-xnnpack", 1), ("tflite_runtime", 1), "cpu_p50_ms"))]
    if old_xnn:
        lines.append(f"- What XNNPACK is worth inside tflite-runtime, 1 thread (CPU time without / with; about 1: XNNPACK does not take that model): {_ratio_text(old_xnn)}.")
    return "Read off the table:\n\n" + "\n".join(lines) if lines else ""


def _speedups(rows: list[dict[str, Any]]) -> str:
    """float32 p50 / other mode's p50, per API and thread count (> 1: faster than float32)."""
    p50 = {(r["mode"], r["api"], r["threads"]): r["p50_ms"] for r in rows}
    combos = sorted({(r["api"], r["threads"]) for r in rows}, key=lambda k: (k[0], k[1]))
    modes = [m for m in ("float16", "dynamic", "int8") if any(k[0] == m for k in p50)]
    if not modes:
        return ""
    out = []
    for api, threads in combos:
        base = p50.get(("float32", api, threads))
        if base is None:
            continue
        out.append([api, threads, *[(round(base / p50[(m, api, threads)], 2) if (m, api, threads) in p50 else None) for m in modes]])
    if not out:
        return ""
    return "Speed-up over float32 (float32 p50 / mode p50; above 1 is faster):\n\n" + table(["API", "threads", *modes], out)


def render_pipeline(d: dict[str, Any]) -> str:
    rows = d.get("results", [])
    s = d.get("settings", {})
    import bench_pipeline

    def ratios(r: dict[str, Any]) -> list[str]:
        raw, naive = bench_pipeline.paired(r, "raw"), bench_pipeline.paired(r, "naive")
        return [f"{100 * raw[0]:.0f}%", f"x{naive[0]:.2f}", f"{naive[1]} of {naive[2]}"]

    body = table(
        ["model", "mode", "threads", "raw invoke fps", "naive loop fps", "tledge run fps", "tledge's stats line fps", "tledge / raw", "tledge / naive", "rounds tledge ahead of naive"],
        [[r["model"], r["mode"], r["threads"], r["raw_invoke_fps"], r["naive_fps"], r["tledge_fps"], r["tledge_stats_fps"], *ratios(r)] for r in rows],
    )
    extra = table(
        ["model", "threads", "decode ms/frame", "tledge preprocess ms/frame", "naive resize ms/frame", "invoke p50 ms", "tledge's per-frame latency ms", "naive loop fps (CPU ms/frame)", "Pipeline in-process fps (CPU ms/frame)"],
        [[r["model"], r["threads"], r.get("decode_ms"), r.get("preprocess_ms"), r.get("naive_resize_ms"), r["raw_invoke_p50_ms"], r.get("tledge_frame_latency_ms"),
          f"{r['naive_fps']:.1f} ({r.get('naive_cpu_ms_per_frame', 0):.1f})", f"{r.get('pipeline_inprocess_fps', 0):.1f} ({r.get('pipeline_cpu_ms_per_frame', 0):.1f})"] for r in rows],
    )
    cmds = "\n".join(f"- `{r['tledge_command']}`" for r in rows[:2])
    return (
        f"Video: `{s.get('video')}` ({s.get('size')}, MJPG, {rows[0]['frames'] if rows else '?'} frames), "
        f"{s.get('rounds')} interleaved rounds; rates are medians over rounds, ratios are medians of the ratios measured within each "
        f"round (seconds apart, so slow swings of the load cancel). Loop rates are steady-state: (frames - 1) / (last result - first result); "
        f"the raw rate is invokes per second of the model alone on a prepared input.\n\n{body}\n\n"
        f"Where the time goes (decode = cv2.VideoCapture.read; tledge's preprocess = centre crop + INTER_AREA resize, the training policy; "
        f"the naive loop's resize = stretch with INTER_LINEAR; each on one core; "
        f"tledge's per-frame latency = the latency its JSON lines report), and the same "
        f"`edge.pipeline.Pipeline` run in this process as `tledge run` builds it (no CLI, no JSON pipe):\n\n{extra}\n\n"
        f"tledge was run as:\n{cmds}"
    )


def render_startup(d: dict[str, Any]) -> str:
    rows = d.get("results", [])
    s = d.get("settings", {})
    body = table(
        ["variant", "first result, median s", "min s", "max s", "process CPU s (median)", "peak RSS, median MB", "max MB"],
        [[r["variant"], r["first_result_s_median"], r["first_result_s_min"], r["first_result_s_max"], r.get("cpu_s_median"), r["peak_rss_mb_median"], r["peak_rss_mb_max"]] for r in rows],
    )
    cmds = "\n".join(f"- {name}: `{cmd}`" for name, cmd in d.get("commands", {}).items())
    same = {True: "All variants gave the same top-1 class.", False: "**The variants disagree on the top-1 class.**"}.get(d.get("same_top1"), "")
    by = {r["variant"]: r for r in rows}
    if "tledge" in by and "tensorflow" in by:
        t, tf = by["tledge"], by["tensorflow"]
        same += (f" tledge vs TensorFlow's interpreter: x{tf['first_result_s_median'] / t['first_result_s_median']:.1f} sooner to the first result, "
                 f"x{tf['peak_rss_mb_median'] / t['peak_rss_mb_median']:.1f} less peak memory.")
    imports = d.get("tledge_imports") or []
    imports_md = ""
    if imports:
        imports_md = "\n\nSlowest top-level imports of `tledge predict` (one `python -X importtime` run, cumulative ms, load included):\n\n" + table(
            ["module", "ms"], [[i["module"], i["cumulative_ms"]] for i in imports])
    return (
        f"Model `{s.get('model')}` ({s.get('mode')}), image `{s.get('image')}`, {s.get('threads')} threads, "
        f"{s.get('reps')} fresh processes per variant, interleaved. Time from spawning the process to its first "
        f"result line on stdout; peak RSS = the child's ru_maxrss. {same}\n\n{body}\n\n{cmds}{imports_md}"
    )


def _pct(v: Any) -> str:
    return bc.percent(v)


def _acc(v: Any, n: Any) -> str:
    return bc.accuracy(v, n)


def render_export(d: dict[str, Any]) -> str:
    """bench_export.json: one row per quantization mode."""
    rows = d.get("rows", [])
    body = table(
        ["mode", "input", "size MB", "test acc (Keras)", "test acc (.tflite)", "drop, points", "top-1 agreement with Keras", "val acc (.tflite)", "mean invoke ms", "export s"],
        [[r.get("mode"), r.get("io"), round(r.get("size_bytes", 0) / 1e6, 2), _acc(r.get("float_test_accuracy"), r.get("test_images")),
          _acc(r.get("tflite_test_accuracy"), r.get("test_images")),
          None if r.get("float_test_accuracy") is None else round(100 * (r["float_test_accuracy"] - r["tflite_test_accuracy"]), 2),
          _acc(r.get("test_top1_agreement"), r.get("test_images")), _acc(r.get("tflite_val_accuracy"), r.get("val_images")), r.get("mean_invoke_ms"),
          r.get("export_seconds")] for r in rows],
    )
    first = rows[0] if rows else {}
    int8 = next((r for r in rows if r.get("mode") == "int8"), first)
    return (
        f"Run `{first.get('run', '?')}`; {first.get('test_images', '?')} test images, {int8.get('calibration_images', '?')} calibration images for int8. "
        f"Accuracies and agreement measured on the exported file through the edge runtime, exactly as a device runs it.\n\n{body}"
    )


def export_goals(d: dict[str, Any]) -> list[dict[str, Any]]:
    rows = {r.get("mode"): r for r in d.get("rows", [])}
    i8 = rows.get("int8")
    if not i8 or i8.get("float_test_accuracy") is None or i8.get("tflite_test_accuracy") is None:
        return [{"goal": "int8 within 1 point of float (test accuracy)", "met": None, "detail": "no int8 row with test accuracies"}]
    drop = 100 * (i8["float_test_accuracy"] - i8["tflite_test_accuracy"])
    f32 = rows.get("float32", {})
    versus = f", float32 .tflite {_acc(f32.get('tflite_test_accuracy'), f32.get('test_images'))}" if f32 else ""
    agreement = i8.get("test_top1_agreement")
    return [
        {
            "goal": "int8 within 1 point of float (test accuracy)", "met": drop <= 1.0,
            "detail": f"Keras float {_acc(i8['float_test_accuracy'], i8.get('test_images'))}, int8 {_acc(i8['tflite_test_accuracy'], i8.get('test_images'))} ({drop:+.2f} points drop; "
                      f"negative = int8 better){versus}",
        },
        {
            "goal": "int8 top-1 agreement with the float model >= 98% (test)", "met": agreement is not None and agreement >= 0.98,
            "detail": f"{_acc(agreement, i8.get('test_images'))} of {i8.get('test_images', '?')} test images get the same top-1 from the int8 file as from Keras",
        },
    ]


def render_generic(d: dict[str, Any]) -> str:
    """For JSON of a shape this report does not know: its scalars, and any list of rows."""
    if isinstance(d.get("markdown"), str):
        return d["markdown"]
    scalars = [[k, v] for k, v in d.items() if isinstance(v, (int, float, str, bool)) and k not in ("command", "date_utc")]
    parts = [table(["key", "value"], scalars)] if scalars else []
    for key, value in d.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            header = list(dict.fromkeys(k for v in value for k, x in v.items() if not isinstance(x, (dict, list))))
            parts.append(f"{key}:\n\n" + table(header, [[v.get(k) for k in header] for v in value]))
    return "\n\n".join(parts)


#: A second training comparison at more epochs (`bench_train.py --epochs 10 --output bench_train_more_epochs`).
MORE_EPOCHS = "bench_train_more_epochs"


def _more_epochs(d: dict[str, Any] | None) -> str:
    if not d:
        return ""
    s = d.get("summary", {})
    return (
        f"\n\nThe same comparison at another epoch count (`{d.get('command')}`, {d.get('date_utc')}; "
        f"result file `{result_file(MORE_EPOCHS)}`):\n\n{d.get('markdown', '')}\n\n"
        f"Cold-cache tledge vs recipe: {s.get('speedup_cold')}x by wall time, {s.get('cpu_ratio_cold')}x by CPU seconds; "
        f"warm cache {s.get('speedup_warm')}x. 10x goal at these epochs: "
        f"{'MET' if s.get('goal_10x_equal_or_better_accuracy') else 'NOT MET'}."
    )


def render_train(d: dict[str, Any]) -> str:
    """bench_train.py writes its own Markdown table; a second run at more epochs is added when cited."""
    return render_generic(d) + _more_epochs(d.get("_more_epochs"))


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "train": render_train,
    "export": render_export,
    "inference": render_inference,
    "pipeline": render_pipeline,
    "startup": render_startup,
}


def pipeline_goals(d: dict[str, Any]) -> list[dict[str, Any]]:
    """Recomputed from the rows with bench_pipeline's current rules."""
    import bench_pipeline

    return bench_pipeline.goals(d.get("results", []))


GOAL_FUNCTIONS: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "export": export_goals,
    "pipeline": pipeline_goals,
}


def section_goals(name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    if name in GOAL_FUNCTIONS:
        return GOAL_FUNCTIONS[name](data)
    goals = data.get("goals")
    if isinstance(goals, list):
        return [g for g in goals if isinstance(g, dict) and "goal" in g]
    return []


def render_section(name: str, data: dict[str, Any], run: dict[str, Any] | None) -> str:
    body = RENDERERS.get(name, render_generic)(data)
    goals = section_goals(name, data)
    goals_md = f"\n\nGoals:\n\n{goal_lines(goals)}" if goals else ""
    cited = f"Result file: `{result_file(RESULT_NAMES[name])}`."
    return f"## {TITLES[name]}\n\n{_header(data, run)}\n{cited}\n\n{body}{goals_md}\n"


# -- hand-written notes --------------------------------------------------------------------
@dataclass(frozen=True)
class Note:
    """A hand-written explanation of one run: `scripts/results/notes/<section>.md`.

    The file starts with a block of `key: value` lines between `---` lines: `written`
    (date), `run` (the result file it explains) and `run_date_utc` (that file's date_utc).
    """

    section: str
    path: str  # relative to the repo root
    written: str
    run: str
    run_date_utc: str
    body: str


def parse_note(path: Path) -> Note:
    """Read one note; a missing or incomplete header is an error naming the file."""
    text = path.read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    fields = dict(line.split(":", 1) for line in match.group(1).splitlines() if ":" in line) if match else {}
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    missing = [k for k in ("written", "run", "run_date_utc") if not fields.get(k)]
    shown = path.relative_to(bc.ROOT) if path.is_relative_to(bc.ROOT) else path
    if missing:
        raise ValueError(f"{shown}: the note's header lacks {', '.join(missing)}; start it with ---, written: DATE, run: FILE, run_date_utc: DATE, ---")
    return Note(path.stem, str(shown), fields["written"], fields["run"], fields["run_date_utc"], text[match.end():].strip())


def load_notes(folder: Path = NOTES) -> dict[str, Note]:
    return {p.stem: parse_note(p) for p in sorted(folder.glob("*.md"))} if folder.is_dir() else {}


def note_block(note: Note, cited: dict[str, Any] | None, cited_file: str) -> str:
    """The note verbatim, under a line naming its run; flagged when that is not the cited run."""
    lines = [f"Hand-written note (`{note.path}`, written {note.written}), explaining the run `{note.run}` of {note.run_date_utc}:", ""]
    cited_date = (cited or {}).get("date_utc")
    if cited is None:
        lines += [f"> **Unchecked note**: `{cited_file}` is not committed, so the run it explains cannot be compared with the figures above.", ""]
    elif note.run != cited_file or note.run_date_utc != cited_date:
        lines += [f"> **Stale note**: it explains `{note.run}` of {note.run_date_utc}, but this section now cites `{cited_file}` of {cited_date}. Revisit it.", ""]
    return "\n".join([*lines, note.body]) + "\n"


# -- goals -----------------------------------------------------------------------------------
def load_goals(path: Path = GOALS_JSON) -> list[dict[str, Any]]:
    """The stated goals: [{section, goal, stated, changes: [{was, until}], remark?}]."""
    return json.loads(path.read_text())["goals"] if path.is_file() else []


def goals_table(stated: list[dict[str, Any]], measured: dict[str, list[dict[str, Any]]]) -> str:
    """Every stated goal with its status; a measured goal nobody stated is listed and flagged;
    earlier wordings of a goal stay visible with the date they changed."""
    number = {name: title.split(".")[0] for name, title in TITLES.items()}
    rows, seen = [], set()
    for g in stated:
        found = next((m for m in measured.get(g["section"], []) if m["goal"] == g["goal"]), None)
        seen.add((g["section"], g["goal"]))
        if found is not None:
            state = status(found.get("met"), found.get("met_in"))
        elif g["section"] in measured:
            state = "NOT MEASURED (the cited run does not report it)"
        else:
            state = f"no committed result file (`{result_file(RESULT_NAMES[g['section']])}`)"
        rows.append([number[g["section"]], g["goal"], g["stated"] + (f"; {g['remark']}" if g.get("remark") else ""), state])
    for section, goals in measured.items():
        for m in goals:
            if (section, m["goal"]) not in seen:
                rows.append([number[section], m["goal"], "**not stated in scripts/results/goals.json**", status(m.get("met"), m.get("met_in"))])
    out = [table(["#", "goal", "stated", "status"], rows) if rows else "No goal stated yet."]
    changes = [f"- {number[g['section']]}: until {c['until']} the goal read \"{c['was']}\"; since then \"{g['goal']}\"."
               for g in stated for c in g.get("changes", [])]
    if changes:
        out.append("Changed goals (the old wording stays visible):\n\n" + "\n".join(changes))
    return "\n\n".join(out)


def _old_sections(old: str) -> dict[str, str]:
    found = {}
    for match in re.finditer(r"<!-- bench:(\w+) -->\n(.*?)<!-- /bench:\1 -->", old, re.S):
        found[match.group(1)] = match.group(2)
    return found


NO_RESULT_FILE = "> **No result file**:"
NOT_MEASURED = "Not measured yet:"


def _kept(name: str, text: str) -> str:
    """An old section kept without its result file, marked so (once)."""
    lines = [line for line in text.strip("\n").splitlines() if not line.startswith(NO_RESULT_FILE)]
    mark = (f"{NO_RESULT_FILE} `{result_file(RESULT_NAMES[name])}` is not committed, so the figures below cannot be "
            f"re-derived; rerun `scripts/benchmarks.py --only {name}` to replace them.")
    return "\n".join([*lines[:1], "", mark, *lines[1:]]).replace("\n\n\n", "\n\n") + "\n"


def _peak_line(m: dict[str, Any]) -> str:
    mhz = m.get("cpu_mhz", 0.0)
    nominal = f"16 multiply-adds/cycle/core x {mhz / 1000:.2f} GHz (the clock /proc/cpuinfo reports) = {16 * mhz / 1000:.1f} GMAC/s per core"
    core = m.get("core_measured")
    if not core:
        return f"- fp32 peak: {nominal}"
    return (
        f"- fp32 peak, measured (scripts/bench_common.py's C microbenchmark, one core, CPU time): clock {core['clock_ghz']:.2f} GHz "
        f"(a boost clock; the VM's /proc/cpuinfo says {mhz:.0f} MHz), {core['fp32_macs_per_cycle']:.1f} fp32 multiply-adds per cycle "
        f"(2 FMA pipes x 8 lanes), so **{core['fp32_gmac_per_s_per_core']:.1f} GMAC/s per core**, "
        f"{core['fp32_gmac_per_s_per_core'] * m.get('cores', 1):.1f} for all {m.get('cores')}. The nominal figure would be {nominal}."
    )


def _machine(m: dict[str, Any], source: str) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items())
    mhz = m.get("cpu_mhz", 0.0)
    return "\n".join([
        f"- Recorded in: {source}",
        f"- CPU: {m.get('cpu')} ({m.get('cores')} cores at {mhz:.0f} MHz as /proc/cpuinfo reports; SIMD: {' '.join(m.get('simd', []))})",
        _peak_line(m),
        f"- RAM: {m.get('ram_gib')} GiB; {m.get('os')}; Python {m.get('python')}",
        f"- Packages: {packages}",
        "- Each section gives the load average when it started.",
    ])


def _provenance(runs: dict[str, Any], invocation: str, date: str) -> list[str]:
    """Which commands produced the figures, and which wrote this file."""
    rows = [
        [TITLES[name].split(".")[0], f"`{run['command']}`", f"`{run['run_by']}`" if run.get("run_by") else "", run.get("finished_utc", "?"), run.get("wall_s"), run.get("rc")]
        for name in TITLES if isinstance(run := runs.get(name), dict)
    ]
    lines = [f"Written {date} by `{invocation}` from the result files in scripts/results/ (committed; each section cites its own).", ""]
    if rows:
        lines += ["The runs behind the figures:", "", table(["#", "script", "run by", "finished (UTC)", "wall s", "exit"], rows), ""]
    return lines


KEPT_MACHINE = "- Recorded in: no committed result file;"


def machine_section(results: dict[str, Any], current: dict[str, Any], old: str) -> str:
    """The machine a cited result file recorded. When none does, the old section's text (the
    machine of the kept figures), marked; failing that the machine rendering this file, said so."""
    for name in TITLES:
        data = results.get(name)
        if isinstance(data, dict) and isinstance(data.get("machine"), dict) and data["machine"].get("cpu"):
            return _machine(data["machine"], f"`{result_file(RESULT_NAMES[name])}`")
    match = re.search(r"\n## Machine\n\n(.*?)\n\n## ", old, re.S)
    if match:
        kept = [line for line in match.group(1).splitlines() if not line.startswith(KEPT_MACHINE)]
        return "\n".join([f"{KEPT_MACHINE} kept from the previous BENCHMARKS.md (the machine of the kept figures)", *kept])
    return _machine(current, "no cited result file records its machine; this is the machine that rendered this file")


def render(results: dict[str, Any], runs: dict[str, Any], old: str, invocation: str, machine: dict[str, Any],
           notes: dict[str, Note] | None = None, stated_goals: list[dict[str, Any]] | None = None) -> str:
    """The whole BENCHMARKS.md."""
    old_sections = _old_sections(old)
    notes = notes or {}
    measured: dict[str, list[dict[str, Any]]] = {}
    blocks = []
    for name in TITLES:
        data = results.get(name)
        if isinstance(data, list):  # a script that writes a list of rows
            data = {"rows": data}
        if name in HAND_WRITTEN:
            text = old_sections.get(name) or f"## {TITLES[name]}\n\n{NOT_MEASURED} the hand-written section is missing.\n"
        elif isinstance(data, dict):
            text = render_section(name, data, runs.get(name))
            measured[name] = section_goals(name, data)
        elif name in old_sections and NOT_MEASURED not in old_sections[name]:
            text = _kept(name, old_sections[name])
        else:
            text = f"## {TITLES[name]}\n\n{NOT_MEASURED} no result file `{result_file(RESULT_NAMES[name])}`.\n"
        block = f"<!-- bench:{name} -->\n{text}<!-- /bench:{name} -->"
        if name in notes:
            cited = data if isinstance(data, dict) else None
            block += f"\n\n<!-- note:{name} -->\n{note_block(notes[name], cited, result_file(RESULT_NAMES[name]))}<!-- /note:{name} -->"
        blocks.append(block)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    head = [
        "# Benchmarks",
        "",
        "<!-- Generated by scripts/benchmarks.py from scripts/results/ (result files, goals.json, notes/*.md); "
        "edit the notes and goals there, not here. A section without a result file keeps its text. -->",
        "",
        *_provenance(runs, invocation, date),
        "Each section names the exact command that produced it and the result file it cites. Generated text",
        "states only what the result files show; explanations are the hand-written, dated notes under",
        "scripts/results/notes/, each naming the run it explains.",
        "",
        "## Machine",
        "",
        machine_section(results, machine, old),
        "",
        "## Goals",
        "",
        "Stated in scripts/results/goals.json before measuring; a changed goal keeps its old wording below.",
        "",
        goals_table(stated_goals or [], measured),
        "",
    ]
    text = "\n".join(head) + "\n" + "\n\n".join(blocks) + "\n"
    return text.replace(str(bc.SHARED), "../shared").replace(f"{bc.ROOT}/", "")
