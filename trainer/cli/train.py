"""`tledge train`, `tledge evaluate` (owned by the trainer). TensorFlow is imported inside
the commands (through trainer.deps), never at module import."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from edge.choices import ResizePolicy
from trainer.cli.options import DataRootOpt, VerboseOpt
from trainer.config import Backbone, CacheMode, Distribute, FeatureEngine
from trainer.export.options import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_DROP, CalibratorKind, IOType, QuantizationMode


def _options(**kw: Any) -> Any:
    """Build `TrainOptions` from the CLI's flat keyword arguments."""
    from dataclasses import replace

    from trainer.config import (
        DataOptions,
        FineTuneOptions,
        HyperParams,
        ModelOptions,
        RuntimeOptions,
        TrainOptions,
        WeightsSpec,
    )

    fine = FineTuneOptions(blocks=kw["fine_tune"], epochs=kw["fine_tune_epochs"], learning_rate=kw["fine_tune_learning_rate"])
    head_views = HyperParams().augment_views
    if kw["augment_views"] is not None:  # one flag for whichever cache the run uses
        fine, head_views = replace(fine, augment_views=kw["augment_views"]), kw["augment_views"]

    return TrainOptions(
        data=DataOptions(kw["data_dir"], val_split=kw["val_split"], test_split=kw["test_split"], subset=kw["subset"]),
        model=ModelOptions(
            backbone=kw["backbone"], alpha=kw["alpha"], image_size=kw["image_size"], weights=WeightsSpec.parse(kw["weights"]),
            dropout=kw["dropout"], resize=kw["resize"], allow_random_backbone=kw["allow_random_backbone"],
        ),
        hyper=HyperParams(
            epochs=kw["epochs"], batch_size=kw["batch_size"], learning_rate=kw["learning_rate"], label_smoothing=kw["label_smoothing"],
            augment_views=head_views, class_weights=kw["class_weights"], patience=kw["patience"], fine_tune=fine,
        ),
        runtime=RuntimeOptions(engine=kw["engine"], cache=kw["cache"], distribute=kw["distribute"], quiet=kw["quiet"] or kw["json_out"]),
        out_dir=kw["out"],
        name=kw["name"],
        seed=kw["seed"],
    )


def register(app: typer.Typer, wrap: Callable[[Any], Any]) -> None:
    """Add `train` and `evaluate` to `app`; `wrap` maps domain errors to exit codes."""
    defaults = _defaults()

    @app.command()
    @wrap
    def train(
        data_dir: Path = typer.Argument(..., help="Folder of class folders (or with train/ val/ test/ sub-folders)."),
        out: Path = typer.Option(Path("runs"), help="Parent folder of the run directory."),
        name: Optional[str] = typer.Option(None, help="Run name (default: the data folder's name)."),
        backbone: Backbone = typer.Option(Backbone.MOBILENET_V2, help="Frozen ImageNet backbone."),
        alpha: float = typer.Option(1.0, min=0.35, max=1.4, help="MobileNetV2 width multiplier."),
        image_size: int = typer.Option(224, min=32, max=512, help="Square input size, pixels (96..224 for pretrained weights)."),
        weights: Optional[str] = typer.Option(None, help="imagenet | none | PATH (default: $TLEDGE_WEIGHTS, else imagenet)."),
        allow_random_backbone: bool = typer.Option(False, help="If ImageNet weights are unavailable, train on a random backbone (poor accuracy; recorded in the run)."),
        epochs: int = typer.Option(defaults.epochs, min=1, help="Head epochs (early stopping restores the best)."),
        batch_size: int = typer.Option(defaults.batch_size, min=1),
        learning_rate: float = typer.Option(defaults.learning_rate, min=0.0),
        dropout: float = typer.Option(0.2, min=0.0, max=0.95),
        label_smoothing: float = typer.Option(defaults.label_smoothing, min=0.0, max=0.5),
        augment_views: Optional[int] = typer.Option(
            None, min=0, max=32,
            help=f"Augmented copies of each training image in the cache (default {defaults.augment_views}; with --fine-tune {defaults.fine_tune.augment_views}).",
        ),
        class_weights: bool = typer.Option(True, "--class-weights/--no-class-weights", help="Balance imbalanced classes in the loss."),
        patience: int = typer.Option(defaults.patience, min=1, help="Early-stopping patience, epochs."),
        fine_tune: str = typer.Option(
            "0", callback=_parse_fine_tune, metavar="BLOCKS|auto",
            help="Second stage: train the top BLOCKS backbone blocks and the head on activations cached below them (0: off; auto: the measured default).",
        ),
        fine_tune_epochs: int = typer.Option(defaults.fine_tune.epochs, min=1, help="Most fine-tuning epochs (early stopping on val loss ends sooner)."),
        fine_tune_learning_rate: float = typer.Option(defaults.fine_tune.learning_rate, min=0.0, help="Peak fine-tuning rate after the warm-up (cosine decay to 0)."),
        val_split: float = typer.Option(0.1, min=0.0, max=0.9, help="Fraction per class for validation (when there is no val/)."),
        test_split: float = typer.Option(0.1, min=0.0, max=0.9, help="Fraction per class for test (when there is no test/)."),
        subset: Optional[int] = typer.Option(None, min=1, help="At most N images per class and split (a quick run)."),
        resize: ResizePolicy = typer.Option(ResizePolicy.CENTER_CROP, help="How images become the input size."),
        engine: FeatureEngine = typer.Option(FeatureEngine.AUTO, help="Feature pass: TFLite copy of the backbone (checked against Keras) or Keras."),
        cache: CacheMode = typer.Option(CacheMode.DISK, help="Keep features on disk ($TLEDGE_CACHE) or only in memory."),
        distribute: Distribute = typer.Option(Distribute.AUTO, help="How the head is fitted: auto/none in NumPy on the CPU; mirrored by Keras under MirroredStrategy over every visible device."),
        seed: int = typer.Option(42, help="Fixes the split, shuffling and initialisation."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout (implies --quiet)."),
        export: bool = typer.Option(False, "--export", help="Then export the run to a verified bundle, in the same process (the export options below apply)."),
        quantize: bool = typer.Option(False, "--quantize", help="With --export: full-integer int8 (uint8 camera-pixel input) unless --mode says otherwise."),
        mode: Optional[QuantizationMode] = typer.Option(None, "--mode", help="With --export: int8 | float16 | dynamic | float32 (default: int8 with --quantize, else float32)."),
        io: Optional[IOType] = typer.Option(None, "--io", help="With --export, int8 models: uint8 (raw pixels, default) or int8 input/output."),
        calibration_images: int = typer.Option(DEFAULT_CALIBRATION_IMAGES, min=1, help="With --export, int8: training images used to calibrate ranges."),
        calibrator: Optional[CalibratorKind] = typer.Option(None, "--calibrator", help="With --export, int8: tensorflow or litert (as in export). Default: $TLEDGE_CALIBRATOR, else tensorflow."),
        bundle_out: Optional[Path] = typer.Option(None, "--bundle-out", help="With --export: bundle folder (default: models/<run name>)."),
        force: bool = typer.Option(False, "--force", help="With --export: replace an existing bundle."),
        max_drop: float = typer.Option(DEFAULT_MAX_DROP, min=0.0, help="With --export: largest accepted accuracy drop, in points (val + test)."),
        accept_drop: bool = typer.Option(False, "--accept-drop", help="With --export: write the bundle even when accuracy drops more than --max-drop."),
        verbose: bool = VerboseOpt,
    ) -> None:
        """Fine-tune a frozen ImageNet backbone on a folder of class folders (--export: and bundle it)."""
        from trainer.quiet import quiet_command

        export_options = _export_options(export, quantize, mode, io, calibration_images, calibrator, bundle_out, force, max_drop, accept_drop)
        options = _options(**locals())
        with quiet_command(verbose):
            from trainer.train import train as run_training

            result = run_training(options)
            if export_options is not None:
                _export_run(result, export_options, json_out, quiet)
                return
        if json_out:
            typer.echo(json.dumps(result.summary))
        elif not quiet:
            _print_result(result)

    @app.command()
    @wrap
    def evaluate(
        run_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="A run directory made by tledge train."),
        split: str = typer.Option("test", help="train | val | test"),
        json_out: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
        data_root: Optional[Path] = DataRootOpt,
        verbose: bool = VerboseOpt,
    ) -> None:
        """Recompute the metrics of a run's Keras model on one of its splits."""
        from trainer.deps import require_tensorflow
        from trainer.quiet import quiet_command

        with quiet_command(verbose):
            require_tensorflow("tledge evaluate")
            from trainer.evaluate import evaluate_run
            from trainer.stats import format_json

            metrics = evaluate_run(run_dir, split, data_root)
        if json_out:
            typer.echo(json.dumps(metrics))
            return
        typer.echo(f"{split}: accuracy {format_json(metrics['accuracy_interval'])}, macro F1 {metrics['macro_f1']}")
        for label, row in metrics["per_class"].items():
            typer.echo(f"  {label:20s} precision {row['precision']:.3f}  recall {row['recall']:.3f}  f1 {row['f1']:.3f}  n {row['support']}")
        if metrics["unreadable"]:
            typer.echo(f"  {len(metrics['unreadable'])} image(s) could not be read")


def _export_options(
    export: bool, quantize: bool, mode: QuantizationMode | None, io: IOType | None, calibration_images: int,
    calibrator: CalibratorKind | None, bundle_out: Path | None, force: bool, max_drop: float, accept_drop: bool,
) -> Any:
    """The `ExportOptions` of `train --export`, or None without --export (export flags
    without --export are a usage error: they would silently do nothing)."""
    from trainer.cli.export import choose_mode
    from trainer.errors import ExportError
    from trainer.export.options import ExportOptions, resolve_calibrator

    if not export:
        given = [flag for flag, on in (("--quantize", quantize), ("--mode", mode is not None), ("--io", io is not None),
                                       ("--calibrator", calibrator is not None), ("--bundle-out", bundle_out is not None), ("--force", force),
                                       ("--accept-drop", accept_drop)) if on]
        if given:
            raise typer.BadParameter(f"{', '.join(given)} only apply with --export; add --export or drop them", param_hint="--export")
        return None
    quantization = choose_mode(quantize, mode, io)
    if quantization is QuantizationMode.INT8:
        try:  # $TLEDGE_CALIBRATOR too: a bad value ends the command before training, not after it
            resolve_calibrator(calibrator)
        except ExportError as exc:
            raise typer.BadParameter(str(exc), param_hint="--calibrator") from None
    return ExportOptions(
        quantization=quantization, io_type=io or IOType.UINT8, calibration_images=calibration_images,
        calibrator=calibrator, out=bundle_out, force=force, max_drop=max_drop, accept_drop=accept_drop,
    )


def _export_run(result: Any, options: Any, json_out: bool, quiet: bool) -> None:
    """Export the run `result` just wrote, verifying the float side from its features."""
    import sys
    import time
    import warnings

    from rich.console import Console

    from trainer.export import CalibrationWarning
    from trainer.export import export as run_export
    from trainer.export.render import render_report
    from trainer.export.verify import VerificationFailed

    err = Console(file=sys.stderr)
    stdout = Console()
    if not quiet and not json_out:
        _print_result(result)
    start = time.perf_counter()
    log = (lambda text: None) if quiet else (lambda text: err.print(text, style="dim", highlight=False, markup=False))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)  # shown through `log` instead
            exported = run_export(result.run_dir, options, log=log, float_features=result.verification_features, model=result.model)
    except VerificationFailed as failure:
        if json_out:
            typer.echo(json.dumps({"run": result.summary, "export": {**failure.report, "bundle": None}}, ensure_ascii=False))
        else:
            render_report(failure.report, stdout)
        raise
    export_s = round(time.perf_counter() - start, 2)
    if json_out:
        typer.echo(json.dumps({"run": result.summary, "export": {**exported.report, "bundle": str(exported.bundle_dir), "wall_s": export_s}}, ensure_ascii=False))
        return
    render_report(exported.report, stdout)
    stdout.print(f"run: {result.run_dir}\nbundle: {exported.bundle_dir}\ntrain {result.wall_s:.1f} s + export {export_s:.1f} s", highlight=False)


def _defaults() -> Any:
    from trainer.config import HyperParams

    return HyperParams()


def _parse_fine_tune(value: str) -> int | None:
    from trainer.config import FineTuneOptions

    try:
        return FineTuneOptions.parse_blocks(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _print_result(result: Any) -> None:
    """The summary: every accuracy with its 95 % Wilson interval and sample size."""
    from trainer.stats import format_json

    s = result.summary
    head = s.get("headline") or {}
    typer.echo(f"run: {result.run_dir}")
    if head.get("source") == "kfold":
        typer.echo(f"accuracy (k-fold out-of-fold estimate): {format_json(head.get('interval'))}")
    typer.echo(f"val accuracy   {format_json(s.get('val_interval'))}")
    typer.echo(f"test accuracy  {format_json(s.get('test_interval'))}  (evaluated once, after selection on val)")
    weak = (s.get("weak_estimate") or {}).get("splits") or {}
    for split, smallest in weak.items():
        typer.echo(f"  weak estimate: {split} has only {smallest} image(s) in its smallest class")
    tuned = s.get("fine_tune") or {}
    if tuned.get("ran"):
        verdict = f"kept (epoch {tuned['best_epoch']} of {tuned['epochs_run']})" if tuned.get("kept") else "discarded"
        typer.echo(f"fine-tune: {tuned['blocks']} block(s) on cached activations, {verdict}")
    typer.echo(f"wall time {result.wall_s:.1f} s; next: tledge export {result.run_dir}")
