"""The `tledge` command line: the root app, its error handling, and the device commands
(predict, run, bench, collect). The training commands (train, evaluate, export, demo)
are added from `trainer.cli` when the trainer package imports; the device commands never
import TensorFlow or trainer.

Start-up imports only Typer and the light `edge.choices`; every command imports what it
needs when it runs (OpenCV, NumPy, the interpreter). Library code raises `TledgeError`;
`handle_errors` turns it into a message and exit code 1 (Ctrl-C: 130), never a traceback.

`predict` exits 0 when at least one image was classified; images that cannot be read
are reported by name on stderr and skipped; exit 1 only when every image failed.
"""

from __future__ import annotations

from edge.startup import guard_start_up

_PREVIOUS_SIGINT = guard_start_up()  # before the imports below: they are the slow part

import functools  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Optional, TypeVar  # noqa: E402

import typer  # noqa: E402

from edge.choices import BenchApi, DisplayMode  # noqa: E402
from edge.cli_lifecycle import self_test_at_start  # noqa: E402
from edge.errors import TledgeError  # noqa: E402

ModelArg = typer.Argument(..., exists=True, help="A bundle folder, its manifest.json, or any image-classification .tflite.")
LabelsOpt = typer.Option(None, "--labels", exists=True, dir_okay=False, help="Labels file (one per line) for a .tflite without embedded labels.")
ThreadsOpt = typer.Option(None, "--threads", min=1, max=64, help="Interpreter threads (default: CPU cores, at most 4).")
DelegateOpt = typer.Option(None, "--delegate", help="Delegate library to load, e.g. libedgetpu.so.1 for a Coral Edge TPU.")
ThresholdOpt = typer.Option(
    None, "--threshold", "-t", help="Decision threshold overriding the bundle's: 0.8 (every class) or LABEL=0.9 (repeatable). Below it: unknown."
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
    from edge.cli_lifecycle import register as register_lifecycle

    register_lifecycle(app, wrap)
    from edge.cli_label import label as label_command

    app.command()(wrap(label_command))


def predict(
    model: Path = ModelArg,
    images: list[Path] = typer.Argument(..., help="Image files to classify."),
    labels: Optional[Path] = LabelsOpt,
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="Classes to show per image."),
    threads: Optional[int] = ThreadsOpt,
    delegate: Optional[str] = DelegateOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image on stdout instead of a table."),
    threshold: Optional[list[str]] = ThresholdOpt,
) -> None:
    """Classify image files with a bundle or .tflite."""
    from edge.errors import ImageError
    from edge.images import load_rgb

    clf = _load_classifier(model, labels, threads, delegate)
    self_test_at_start(clf)
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


def _check_token(value: Optional[str]) -> Optional[str]:
    """--token / TLEDGE_TOKEN: a short or odd token is a usage error (exit 2), before anything starts."""
    if value is None:
        return None
    from edge.errors import ServeError
    from edge.serve.options import check_token

    try:
        return check_token(value)
    except ServeError as exc:
        raise typer.BadParameter(str(exc)) from None


def run(
    model: Path = ModelArg,
    source: str = typer.Option(..., "--source", "-s", help="Camera index or /dev/videoN, rtsp:// or http(s):// URL, 'picam', a video file, an image, a folder or a glob."),
    labels: Optional[Path] = LabelsOpt,
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, max=64, help="Interpreter threads (default: CPU cores - 1, at least 1, at most 4: one core decodes and resizes)."
    ),
    delegate: Optional[str] = DelegateOpt,
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, help="Classes reported per frame."),
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
    serve: Optional[str] = typer.Option(None, "--serve", help="Live view in the browser at [HOST:]PORT (default host 127.0.0.1; off loopback a token is always required)."),
    token: Optional[str] = typer.Option(
        None, "--token", envvar="TLEDGE_TOKEN", callback=_check_token,
        help="Access token for --serve, at least 16 characters (better: set TLEDGE_TOKEN, a command line is visible to other users). Off loopback without one, a token is generated and printed once.",
    ),
    allow_host: list[str] = typer.Option([], "--allow-host", help="Another host name the live view may be reached by off loopback (repeatable), e.g. a DNS alias."),
    tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", exists=True, dir_okay=False, help="Serve the live view over https with this PEM certificate (with --tls-key)."),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", exists=True, dir_okay=False, help="The PEM private key of --tls-cert."),
    serve_network: bool = typer.Option(False, "--serve-as-network", hidden=True, help="Treat a loopback --serve address as off loopback (tests)."),
    watch: bool = typer.Option(False, "--watch", help="Hot update: MODEL is a folder watched for new bundles (a `current` symlink, the bundle folder itself, or a folder bundles are deployed into); each is verified, then swapped in between two frames."),
    settle: float = typer.Option(2.0, "--settle", min=0.0, help="--watch: seconds a new bundle's folder must stay unchanged before it is opened (copies in progress)."),
    save_uncertain: Optional[Path] = typer.Option(
        None, "--save-uncertain", file_okay=False,
        help="Save frames the model is unsure about (below --threshold, small top-1/top-2 margin, or a label flip) here as JPEG + JSON sidecar, for labelling.",
    ),
    uncertain_margin: float = typer.Option(0.15, "--uncertain-margin", min=0.0, max=1.0, help="--save-uncertain: a top-1 minus top-2 score below this is uncertain (0: off)."),
    save_rate: float = typer.Option(6.0, "--save-rate", min=0.01, help="--save-uncertain: frames saved per minute, at most."),
    save_max_mb: float = typer.Option(200.0, "--save-max-mb", min=0.01, help="--save-uncertain: stop saving while the folder holds this many MiB."),
    label_into: Optional[Path] = typer.Option(
        None, "--label-into", file_okay=False,
        help="With --serve and --save-uncertain: a panel in the live view files saved frames into DATA/<label>/ (the training layout).",
    ),
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

    if label_into is not None and (save_uncertain is None or not serve):
        raise typer.BadParameter("--label-into needs --save-uncertain DIR and --serve [HOST:]PORT (the live view shows the labelling panel)",
                                 param_hint="--label-into")
    _setup_logging()
    watcher = None
    if watch and labels is not None:
        raise TledgeError("--labels cannot be combined with --watch: a watched folder holds bundles, which carry their labels")
    if watch:
        from edge.watch import BundleWatcher, WatchOptions

        watcher = BundleWatcher(model, WatchOptions(settle_s=settle, threads=threads or pipeline_threads(), delegate=delegate))
        first = watcher.load_initial()
        clf = first.classifier
        typer.echo(f"tledge: watching {model}; self-test: {first.selftest}", err=True)
    else:
        clf = _load_classifier(model, labels, threads or pipeline_threads(), delegate)
        self_test_at_start(clf)
    src = open_source(source, model_size=clf.input_size)
    options = PipelineOptions(
        top_k=top_k, smooth=smooth, realtime=realtime, loop=loop, max_frames=max_frames,
        reconnect=ReconnectPolicy(max_attempts=reconnect_attempts), decision=_decision_policy(clf, threshold),
        threshold_overrides=tuple(threshold or ()),
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
            if watcher is not None:
                from edge.watch import EventLinesSink

                sinks.append(EventLinesSink(sys.stdout))
        events_sink = _usage_checked(build_events_sink, outputs)
        if events_sink is not None:
            sinks.append(events_sink)
        if csv_path is not None:
            sinks.append(CsvSink(csv_path))
        if save_uncertain is not None:
            sinks.append(_uncertain_sink(save_uncertain, clf, uncertain_margin, save_rate, save_max_mb))
        if serve:
            desk = _label_desk(save_uncertain, label_into, clf.labels) if label_into is not None and save_uncertain is not None else None
            sinks.append(_live_view_sink(serve, token, clf.info, allow_host, tls_cert, tls_key, serve_network, desk))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    pipeline = Pipeline(clf, src, sinks, options)
    typer.echo(f"tledge: running {clf.info.name} on {src.name} ({clf.backend.name}, {clf.input_size[1]}x{clf.input_size[0]})", err=True)
    if watcher is not None:
        watcher.attach(pipeline)
        watcher.start()
    try:
        with stop_on_signals(pipeline):
            stats = pipeline.run()
    finally:
        if watcher is not None:
            watcher.stop()
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


def _live_view_sink(serve: str, token: Optional[str], info: Any, allow_hosts: list[str], tls_cert: Optional[Path],
                    tls_key: Optional[Path], as_network: bool, desk: Any = None) -> Any:
    """The browser live view (edge/serve/), imported only when --serve is given."""
    from edge.serve.sink import LiveViewSink

    return LiveViewSink.from_cli(
        serve, token, info, allow_hosts=tuple(allow_hosts), tls_cert=tls_cert, tls_key=tls_key, network=True if as_network else None,
        labelling=desk,
    )


def _uncertain_sink(folder: Path, clf: Any, margin: float, rate: float, max_mb: float) -> Any:
    """--save-uncertain: the sink that saves unsure frames (edge/uncertain.py), judged by the
    run's decision policy (a frame decided `unknown` is uncertain)."""
    from edge.bundle import sha256_bytes
    from edge.uncertain import UncertainOptions, UncertainSink

    options = UncertainOptions(folder=folder, margin=margin, save_per_minute=rate, max_mb=max_mb)
    return UncertainSink(options, tuple(clf.labels), clf.info.name, sha256_bytes(clf.info.model_bytes))


def _label_desk(inbox_dir: Path, data_dir: Path, labels: Any) -> Any:
    """--label-into: what the live view's labelling panel files into (edge/serve/labelling.py)."""
    from edge.serve.labelling import LabelDesk

    return LabelDesk(inbox_dir, data_dir, tuple(labels))


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


# -- the root app ----------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="tledge",
    help="Train a small image classifier, export a verified quantized .tflite bundle, run it at the edge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` to stderr and return the Exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn domain errors into exit code 1, Ctrl-C into 130; never a traceback for users."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TledgeError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            typer.secho("interrupted", fg=typer.colors.YELLOW, err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _training_commands() -> Callable[[typer.Typer, Callable[[Any], Any]], None] | None:
    """`trainer.cli.register` when the trainer package is installed, else None (a device
    install: only the device commands). Importing it loads no TensorFlow."""
    try:
        from trainer.cli import register as register_training
    except ModuleNotFoundError as exc:
        if exc.name not in ("trainer", "trainer.cli"):
            raise
        return None
    return register_training


def _register() -> None:
    register_training = _training_commands()
    if register_training is not None:
        register_training(app, handle_errors)
    register(app, handle_errors)


_register()
if _PREVIOUS_SIGINT is not None:
    signal.signal(signal.SIGINT, _PREVIOUS_SIGINT)  # from here on handle_errors / click handle Ctrl-C


def main() -> None:
    """Console-script entry point (`tledge`)."""
    try:
        app(prog_name="tledge")
    finally:
        # The process ends here. Without this, the interpreter's last collections walk
        # every object still alive (after `tledge train`, all of TensorFlow's: most of a
        # second) only to free memory that exiting frees anyway. Files and streams are
        # closed by their own code, atexit handlers still run.
        gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
