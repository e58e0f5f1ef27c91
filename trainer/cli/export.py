"""`tledge export`: a training run -> a verified, self-describing .tflite bundle.

TensorFlow is imported inside the command (through trainer.deps), never at module import.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from trainer.cli.options import DataRootOpt, VerboseOpt
from trainer.export.options import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_DROP, CalibratorKind, IOType, QuantizationMode, ThresholdMode


_HELP = """Convert a training run to a verified, self-describing .tflite bundle.

Without --quantize the model stays float32. --quantize alone gives full-integer int8
with uint8 input (raw camera pixels, scale 1, zero point 0) and uint8 output; --io int8
gives int8 input/output instead. --mode float16 or --mode dynamic (int8 weights, float
activations) choose the lighter quantizations.

Every export is run with the edge runtime over the run's val and test images and
compared with the float Keras model; the command fails (exit 1) when accuracy drops by
more than --max-drop points, unless --accept-drop is given. The bundle goes to
models/<run name>/ (model.tflite, labels.txt, manifest.json, report.json).
"""


def choose_mode(quantize: bool, mode: QuantizationMode | None, io_type: IOType | None) -> QuantizationMode:
    """The conversion mode the flags ask for; contradictions are usage errors."""
    if mode is None:
        mode = QuantizationMode.INT8 if quantize else QuantizationMode.FLOAT32
    elif quantize and mode is QuantizationMode.FLOAT32:
        raise typer.BadParameter("--quantize contradicts --mode float32; drop one of them", param_hint="--mode")
    if io_type is not None and mode is not QuantizationMode.INT8:
        raise typer.BadParameter(f"--io applies to int8 models only (this export is {mode.value})", param_hint="--io")
    return mode


def register(app: typer.Typer, wrap: Callable[[Any], Any]) -> None:
    """Add `export` to `app`; `wrap` maps domain errors to exit codes."""

    @app.command(help=_HELP)
    @wrap
    def export(
        run_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="A run directory written by tledge train."),
        quantize: bool = typer.Option(False, "--quantize", "-q", help="Quantize: full-integer int8 (uint8 camera-pixel input) unless --mode says otherwise."),
        mode: Optional[QuantizationMode] = typer.Option(None, "--mode", help="int8 | float16 | dynamic | float32 (default: int8 with --quantize, else float32)."),
        io: Optional[IOType] = typer.Option(None, "--io", help="int8 models: uint8 (raw pixels, default) or int8 input/output."),
        calibration_images: int = typer.Option(DEFAULT_CALIBRATION_IMAGES, min=1, help="int8: training images used to calibrate ranges, stratified over classes."),
        calibrator: Optional[CalibratorKind] = typer.Option(None, "--calibrator", help="int8: what measures the ranges: tensorflow (TensorFlow's own calibrator) or litert (the edge runtime's interpreter: the same ranges to float rounding, measured faster, but the Keras model is then converted, which makes the export slower in all). Default: $TLEDGE_CALIBRATOR, else tensorflow."),
        out: Optional[Path] = typer.Option(None, help="Bundle folder (default: models/<run name>)."),
        force: bool = typer.Option(False, "--force", help="Replace an existing bundle (the old one stays until the new one is complete)."),
        max_drop: float = typer.Option(DEFAULT_MAX_DROP, min=0.0, help="Largest accepted accuracy drop, in points (val + test)."),
        accept_drop: bool = typer.Option(False, "--accept-drop", help="Write the bundle even when accuracy drops more than --max-drop."),
        threads: Optional[int] = typer.Option(None, min=1, help="Interpreter threads for verification (default: all cores, at most 4)."),
        json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout (progress stays on stderr)."),
        data_root: Optional[Path] = DataRootOpt,
        verbose: bool = VerboseOpt,
        target_precision: float = typer.Option(0.95, "--target-precision", min=0.01, max=1.0, help="Per-class decision thresholds reaching this precision on val (below them: unknown)."),
        thresholds: ThresholdMode = typer.Option(ThresholdMode.AUTO, "--thresholds", help="auto: choose per-class thresholds; none: store none (devices decide top-1)."),
    ) -> None:
        from rich.console import Console

        from trainer.deps import check_installed
        from trainer.quiet import quiet_command

        chosen = choose_mode(quantize, mode, io)
        check_installed("tledge export")
        from trainer.export import CalibrationWarning, ExportOptions
        from trainer.export import export as run_export
        from trainer.export.render import render_report
        from trainer.export.verify import VerificationFailed

        options = ExportOptions(
            quantization=chosen, io_type=io or IOType.UINT8, calibration_images=calibration_images, out=out,
            force=force, max_drop=max_drop, accept_drop=accept_drop, threads=threads, data_root=data_root, calibrator=calibrator,
            target_precision=None if thresholds is ThresholdMode.NONE else target_precision,
        )
        err = Console(stderr=True)  # sys.stderr looked up on each write (trainer.quiet swaps it)
        stdout = Console()
        try:
            with warnings.catch_warnings(), quiet_command(verbose):
                warnings.simplefilter("ignore", CalibrationWarning)  # shown through `log` instead
                result = run_export(run_dir, options, log=lambda text: err.print(text, style="dim", highlight=False, markup=False))
        except VerificationFailed as failure:
            if json_out:
                typer.echo(json.dumps({**failure.report, "bundle": None}, ensure_ascii=False))
            else:
                render_report(failure.report, stdout)
            raise
        if json_out:
            typer.echo(json.dumps({**result.report, "bundle": str(result.bundle_dir)}, ensure_ascii=False))
            return
        render_report(result.report, stdout)
        stdout.print(f"bundle: {result.bundle_dir}", highlight=False)
