"""Edge commands: predict, run, bench, collect. Never imports TensorFlow or trainer.

`predict` exits 0 when at least one image was classified; images that cannot be read
are reported by name on stderr and skipped; exit 1 only when every image failed.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from edge.choices import BenchApi, DisplayMode
from edge.errors import TledgeError

ModelArg = typer.Argument(..., exists=True, help="A bundle folder, its manifest.json, or any image-classification .tflite.")
LabelsOpt = typer.Option(None, "--labels", exists=True, dir_okay=False, help="Labels file (one per line) for a .tflite without embedded labels.")
ThreadsOpt = typer.Option(None, "--threads", min=1, max=64, help="Interpreter threads (default: CPU cores, at most 4).")
DelegateOpt = typer.Option(None, "--delegate", help="Delegate library to load, e.g. libedgetpu.so.1 for a Coral Edge TPU.")
ThresholdOpt = typer.Option(
    None, "--threshold", help="Decision threshold overriding the bundle's: 0.8 (every class) or LABEL=0.9 (repeatable). Below it: unknown."
)


def _decision_policy(clf: Any, overrides: Optional[list[str]]) -> Any:
    """The bundle's per-class thresholds with --threshold applied; bad overrides are usage errors."""
    from edge.decision import DecisionPolicy
    from edge.errors import DecisionError

    labels = clf.labels
    try:
        return DecisionPolicy.for_model(labels, clf.info.manifest, overrides or ())
    except DecisionError as exc:
        raise typer.BadParameter(str(exc), param_hint="--threshold") from None


def _setup_logging() -> None:
    """Runtime notices (reconnects, skipped files) go to stderr, one line each."""
    logger = logging.getLogger("tledge.edge")
    if not any(getattr(h, "_tledge", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("tledge: %(message)s"))
        handler._tledge = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _load_classifier(model: Path, labels: Optional[Path], threads: Optional[int], delegate: Optional[str]) -> Any:
    from edge.bundle import load_model_info
    from edge.classifier import Classifier

    return Classifier(load_model_info(model, labels_path=labels), threads=threads, delegate=delegate)


def register(app: typer.Typer, wrap: Callable[[Any], Any]) -> None:
    """Add the edge commands to `app`; `wrap` maps domain errors to exit codes."""
    app.command()(wrap(predict))
    app.command()(wrap(run))
    app.command()(wrap(bench))
    app.command()(wrap(collect))


def predict(
    model: Path = ModelArg,
    images: list[Path] = typer.Argument(..., help="Image files to classify."),
    labels: Optional[Path] = LabelsOpt,
    top_k: int = typer.Option(5, "--top-k", min=1, help="Classes to show per image."),
    threads: Optional[int] = ThreadsOpt,
    delegate: Optional[str] = DelegateOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image on stdout instead of a table."),
    threshold: Optional[list[str]] = ThresholdOpt,
) -> None:
    """Classify image files with a bundle or .tflite."""
    from edge.errors import ImageError
    from edge.images import load_rgb

    clf = _load_classifier(model, labels, threads, delegate)
    policy = _decision_policy(clf, threshold)
    rows: list[tuple[Path, Any, str]] = []
    failed = 0
    for path in images:
        try:
            prediction = clf.classify(load_rgb(path), top_k=top_k)
        except ImageError as exc:
            typer.secho(f"skipped: {exc}", fg=typer.colors.YELLOW, err=True)
            failed += 1
            continue
        decision = policy.decide(prediction.index, prediction.score)
        rows.append((path, prediction, decision))
        if as_json:
            top = [{"index": i, "label": label, "score": round(score, 6)} for i, label, score in prediction.top]
            record = {"path": str(path), "label": decision, "score": round(prediction.score, 6), "top": top, "latency_ms": round(prediction.latency_ms, 3)}
            typer.echo(_json_line(record))
    if not as_json and rows:
        _print_table(rows)
    if failed == len(images):
        raise TledgeError(f"none of the {len(images)} image(s) could be read; check the paths and formats above")


def _json_line(record: dict[str, Any]) -> str:
    """One JSON object. A file name that is not UTF-8 is \\u-escaped, which reads back to
    the very same name (os.fsencode gives its bytes), instead of being mangled on output."""
    text = json.dumps(record, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(record, ensure_ascii=True)
    return text


def _print_table(rows: list[tuple[Path, Any, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("image", "decision", "rank", "label", "score", "ms")
    for path, prediction, decision in rows:
        for rank, (_, label, score) in enumerate(prediction.top, start=1):
            first = rank == 1
            table.add_row(str(path) if first else "", decision if first else "", str(rank), label, f"{score:.3f}", f"{prediction.latency_ms:.1f}" if first else "")
    Console().print(table)


def run(
    model: Path = ModelArg,
    source: str = typer.Option(..., "--source", "-s", help="Camera index or /dev/videoN, rtsp:// or http(s):// URL, 'picam', a video file, an image, a folder or a glob."),
    labels: Optional[Path] = LabelsOpt,
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, max=64, help="Interpreter threads (default: CPU cores - 1, at least 1, at most 4: one core decodes and resizes)."
    ),
    delegate: Optional[str] = DelegateOpt,
    top_k: int = typer.Option(3, "--top-k", min=1, help="Classes reported per frame."),
    smooth: int = typer.Option(1, "--smooth", min=1, help="Moving average over this many frames' scores (1 = off)."),
    threshold: Optional[list[str]] = ThresholdOpt,
    loop: bool = typer.Option(False, "--loop", help="Video files: start again at the end."),
    realtime: bool = typer.Option(False, "--realtime", help="Video files: play at the file's frame rate and drop frames like a camera."),
    as_json: Optional[bool] = typer.Option(None, "--json/--no-json", help="JSON lines on stdout (default: on when no window is shown)."),
    on_change: bool = typer.Option(False, "--on-change", help="JSON lines only when the top label changes."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", dir_okay=False, help="Append one row per frame to this CSV log."),
    display: DisplayMode = typer.Option(DisplayMode.AUTO, "--display", help="Window with the label drawn on the frame: auto (when a display exists), on, off."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after this many frames."),
    reconnect_attempts: Optional[int] = typer.Option(None, "--reconnect-attempts", min=1, help="Give up on a lost camera after this many attempts (default: never)."),
    serve: Optional[str] = typer.Option(None, "--serve", help="Live view in the browser at [HOST:]PORT."),
    token: Optional[str] = typer.Option(None, "--token", envvar="TLEDGE_TOKEN", help="Access token for --serve (or set TLEDGE_TOKEN: other users can read a command line)."),
    events: bool = typer.Option(False, "--events", help="JSON lines carry start/end events instead of one line per frame."),
    hold: int = typer.Option(3, "--hold", min=1, help="Events: a new decision must hold this many frames (hysteresis)."),
    min_duration: float = typer.Option(0.0, "--min-duration", min=0.0, help="Events: ... and at least this many seconds."),
    device: Optional[str] = typer.Option(None, "--device", help="Device name in events, MQTT topics and queue folders (default: host name)."),
    mqtt: Optional[str] = typer.Option(None, "--mqtt", help="Publish events to mqtt://USER:PASS@HOST:PORT/PREFIX (mqtts:// for TLS; user, password, port optional; password also from TLEDGE_MQTT_PASSWORD)."),
    ha_discovery: bool = typer.Option(False, "--ha-discovery", help="With --mqtt: announce a label and a confidence sensor to Home Assistant."),
    webhook: Optional[str] = typer.Option(None, "--webhook", help="POST each event as JSON to this http(s):// URL (retried with backoff)."),
    webhook_secret: Optional[str] = typer.Option(None, "--webhook-secret", envvar="TLEDGE_WEBHOOK_SECRET", help="Sign webhook bodies: X-Tledge-Signature: sha256=HMAC (or TLEDGE_WEBHOOK_SECRET)."),
    webhook_timeout: float = typer.Option(5.0, "--webhook-timeout", min=0.1, help="Seconds per webhook request before it is retried."),
    exec_command: Optional[str] = typer.Option(None, "--exec", help="Run this command per event; fields in TLEDGE_* environment variables, never in the command line."),
    exec_timeout: float = typer.Option(10.0, "--exec-timeout", min=0.1, help="Seconds before a --exec command is terminated."),
    queue_dir: Optional[Path] = typer.Option(None, "--queue-dir", help="On-disk queue behind --mqtt / --webhook, where events wait while the receiver is away (default: ~/.cache/tledge/queue/DEVICE)."),
    queue_max: int = typer.Option(10_000, "--queue-max", min=1, help="Events the on-disk queue holds; more are refused and counted."),
    flush_timeout: float = typer.Option(5.0, "--flush-timeout", min=0.0, help="At exit: seconds to keep delivering queued events (the rest stays queued for the next run)."),
) -> None:
    """Classify a live camera, stream, video or image folder continuously."""
    from edge.pipeline import Pipeline, PipelineOptions, ReconnectPolicy, stop_on_signals
    from edge.sinks import CsvSink, JsonLinesSink, WindowSink, wants_window
    from edge.outputs.setup import OutputsConfig, build_events_sink, check_outputs, default_device
    from edge.sources import open_source

    from edge.runtime import pipeline_threads

    _setup_logging()
    clf = _load_classifier(model, labels, threads or pipeline_threads(), delegate)
    src = open_source(source, model_size=clf.input_size)
    options = PipelineOptions(
        top_k=top_k, smooth=smooth, realtime=realtime, loop=loop, max_frames=max_frames,
        reconnect=ReconnectPolicy(max_attempts=reconnect_attempts), decision=_decision_policy(clf, threshold),
    )
    outputs = OutputsConfig(
        device=device or default_device(), events_jsonl=events, mqtt_url=mqtt, ha_discovery=ha_discovery, webhook_url=webhook,
        webhook_secret=webhook_secret, webhook_timeout_s=webhook_timeout, exec_command=exec_command, exec_timeout_s=exec_timeout, queue_dir=queue_dir,
        queue_max=queue_max, flush_timeout_s=flush_timeout, hold=hold, min_duration_s=min_duration, model_name=clf.info.name,
    )
    _usage_checked(check_outputs, outputs)
    sinks: list[Any] = []
    try:
        show = wants_window(display)
        if show:
            sinks.append(WindowSink(f"tledge - {clf.info.name}"))
        if (as_json if as_json is not None else not show) and not events:
            sinks.append(JsonLinesSink(sys.stdout, on_change=on_change))
        events_sink = _usage_checked(build_events_sink, outputs)
        if events_sink is not None:
            sinks.append(events_sink)
        if csv_path is not None:
            sinks.append(CsvSink(csv_path))
        if serve:
            sinks.append(_live_view_sink(serve, token, clf.info))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    pipeline = Pipeline(clf, src, sinks, options)
    typer.echo(f"tledge: running {clf.info.name} on {src.name} ({clf.backend.name}, {clf.input_size[1]}x{clf.input_size[0]})", err=True)
    with stop_on_signals(pipeline):
        stats = pipeline.run()
    typer.echo(f"tledge: {stats.line()}", err=True)
    if stats.reason.startswith("source failed"):  # non-zero, so a supervisor (systemd) restarts it
        raise TledgeError(f"{stats.reason}; check the camera or stream (--reconnect-attempts sets how long to retry)")


def _usage_checked(func: Callable[..., Any], *args: Any) -> Any:
    """Call `func`; a bad event-output URL or rejected credentials is a usage error (exit 2)."""
    from edge.errors import OutputUsageError

    try:
        return func(*args)
    except OutputUsageError as exc:
        raise typer.BadParameter(str(exc)) from None


def _live_view_sink(serve: str, token: Optional[str], info: Any) -> Any:
    """The browser live view (edge/server.py), imported only when --serve is given."""
    try:
        from edge import server
    except ModuleNotFoundError as exc:
        if exc.name not in ("edge.server",):
            raise
        raise TledgeError("--serve is not available in this build of tledge (edge.server is missing)") from None
    return server.LiveViewSink.from_cli(serve, token, info)


def bench(
    model: Path = ModelArg,
    threads: str = typer.Option("1,2,4", "--threads", help="Comma-separated thread counts to measure, e.g. 1,2,4."),
    runs: int = typer.Option(50, "--runs", min=1, help="Timed inferences per thread count."),
    warmup: int = typer.Option(5, "--warmup", min=0, help="Untimed inferences first (caches, lazy init)."),
    api: BenchApi = typer.Option(BenchApi.INTERPRETER, "--api", help="interpreter (classic Interpreter) or compiled (LiteRT CompiledModel)."),
    delegate: Optional[str] = DelegateOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per thread count on stdout."),
) -> None:
    """Measure inference latency (p50/p90/p99) and throughput per thread count."""
    from edge.bench import bench_model, parse_thread_counts
    from edge.bundle import load_model_info

    counts = parse_thread_counts(threads)
    info = load_model_info(model)
    results = bench_model(info, counts, runs=runs, warmup=warmup, api=api, delegate=delegate)
    if as_json:
        for result in results:
            typer.echo(json.dumps(result.to_dict()))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("api", "threads", "p50 ms", "p90 ms", "p99 ms", "mean ms", "inferences/s", title=f"{info.name} ({runs} runs)")
    for r in results:
        table.add_row(r.api, str(r.threads), f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.mean_ms:.2f}", f"{r.throughput:.1f}")
    Console().print(table)


def collect(
    data_dir: Path = typer.Argument(..., file_okay=False, help="Dataset root; frames go to DATA_DIR/LABEL/."),
    label: str = typer.Option(..., "--label", help="Class name: the folder the frames are written to."),
    source: str = typer.Option("0", "--source", "-s", help="Same choices as `tledge run --source`."),
    count: int = typer.Option(20, "--count", min=1, help="Frames to save."),
    interval: float = typer.Option(1.0, "--interval", min=0.0, help="Seconds between saved frames (video files: seconds of video)."),
    quality: int = typer.Option(95, "--quality", min=50, max=100, help="JPEG quality."),
) -> None:
    """Capture labelled frames into the training layout DATA_DIR/LABEL/*.jpg."""
    from edge.collect import CollectOptions, collect_frames
    from edge.sources import open_source

    _setup_logging()
    options = CollectOptions(label=label, count=count, interval_s=interval, jpeg_quality=quality)
    src = open_source(source)

    def saved(path: Path, n: int) -> None:
        typer.echo(f"{n}/{count} {path}", err=True)

    written = collect_frames(src, data_dir, options, on_saved=saved)
    typer.echo(f"tledge: saved {len(written)} frame(s) to {data_dir / options.label}", err=True)
    if not written:
        raise TledgeError(f"{src.name} gave no frames; check the source")
