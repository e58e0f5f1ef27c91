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
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Optional, TypeVar  # noqa: E402

import typer  # noqa: E402

from edge.choices import BenchApi, DisplayMode  # noqa: E402
from edge.errors import TledgeError  # noqa: E402

ModelArg = typer.Argument(..., exists=True, help="A bundle folder, its manifest.json, or any image-classification .tflite.")
LabelsOpt = typer.Option(None, "--labels", exists=True, dir_okay=False, help="Labels file (one per line) for a .tflite without embedded labels.")
ThreadsOpt = typer.Option(None, "--threads", min=1, max=64, help="Interpreter threads (default: CPU cores, at most 4).")
DelegateOpt = typer.Option(None, "--delegate", help="Delegate library to load, e.g. libedgetpu.so.1 for a Coral Edge TPU.")


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
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="Classes to show per image."),
    threads: Optional[int] = ThreadsOpt,
    delegate: Optional[str] = DelegateOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image on stdout instead of a table."),
) -> None:
    """Classify image files with a bundle or .tflite."""
    from edge.errors import ImageError
    from edge.images import load_rgb

    clf = _load_classifier(model, labels, threads, delegate)
    rows: list[tuple[Path, Any]] = []
    failed = 0
    for path in images:
        try:
            prediction = clf.classify(load_rgb(path), top_k=top_k)
        except ImageError as exc:
            typer.secho(f"skipped: {exc}", fg=typer.colors.YELLOW, err=True)
            failed += 1
            continue
        rows.append((path, prediction))
        if as_json:
            top = [{"index": i, "label": label, "score": round(score, 6)} for i, label, score in prediction.top]
            record = {"path": str(path), "label": prediction.label, "score": round(prediction.score, 6), "top": top, "latency_ms": round(prediction.latency_ms, 3)}
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


def _print_table(rows: list[tuple[Path, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("image", "rank", "label", "score", "ms")
    for path, prediction in rows:
        for rank, (_, label, score) in enumerate(prediction.top, start=1):
            table.add_row(str(path) if rank == 1 else "", str(rank), label, f"{score:.3f}", f"{prediction.latency_ms:.1f}" if rank == 1 else "")
    Console().print(table)


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
    threshold: float = typer.Option(0.0, "--threshold", "-t", min=0.0, max=1.0, help="Report only classes scoring at least this (after smoothing)."),
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
) -> None:
    """Classify a live camera, stream, video or image folder continuously."""
    from edge.pipeline import Pipeline, PipelineOptions, ReconnectPolicy, stop_on_signals
    from edge.sinks import CsvSink, JsonLinesSink, WindowSink, wants_window
    from edge.sources import open_source

    from edge.runtime import pipeline_threads

    _setup_logging()
    clf = _load_classifier(model, labels, threads or pipeline_threads(), delegate)
    src = open_source(source, model_size=clf.input_size)
    options = PipelineOptions(
        top_k=top_k, smooth=smooth, threshold=threshold, realtime=realtime, loop=loop, max_frames=max_frames,
        reconnect=ReconnectPolicy(max_attempts=reconnect_attempts),
    )
    sinks: list[Any] = []
    try:
        show = wants_window(display)
        if show:
            sinks.append(WindowSink(f"tledge - {clf.info.name}"))
        if as_json if as_json is not None else not show:
            sinks.append(JsonLinesSink(sys.stdout, on_change=on_change))
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
    app(prog_name="tledge")


if __name__ == "__main__":
    sys.exit(main())
