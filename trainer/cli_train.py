"""`tledge train`, `tledge evaluate` (owned by the trainer). TensorFlow is imported inside
the commands (through trainer.deps), never at module import."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from edge.preprocess import ResizePolicy
from trainer.config import Backbone, CacheMode, Distribute, FeatureEngine

DataRootOpt = typer.Option(
    None, "--data-root", file_okay=False,
    help="Where the run's images are now, if they moved since training (default: the folder recorded in splits.json).",
)


def _options(**kw: Any) -> Any:
    """Build `TrainOptions` from the CLI's flat keyword arguments."""
    from trainer.config import DataOptions, HyperParams, ModelOptions, RuntimeOptions, TrainOptions, WeightsSpec

    return TrainOptions(
        data=DataOptions(kw["data_dir"], val_split=kw["val_split"], test_split=kw["test_split"], subset=kw["subset"]),
        model=ModelOptions(
            backbone=kw["backbone"], alpha=kw["alpha"], image_size=kw["image_size"], weights=WeightsSpec.parse(kw["weights"]),
            dropout=kw["dropout"], resize=kw["resize"], allow_random_backbone=kw["allow_random_backbone"],
        ),
        hyper=HyperParams(
            epochs=kw["epochs"], batch_size=kw["batch_size"], learning_rate=kw["learning_rate"], label_smoothing=kw["label_smoothing"],
            augment_views=kw["augment_views"], class_weights=kw["class_weights"], patience=kw["patience"],
            fine_tune_layers=kw["fine_tune"], fine_tune_epochs=kw["fine_tune_epochs"], fine_tune_learning_rate=kw["fine_tune_learning_rate"],
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
        augment_views: int = typer.Option(defaults.augment_views, min=0, max=32, help="Augmented copies of each training image in the feature cache."),
        class_weights: bool = typer.Option(True, "--class-weights/--no-class-weights", help="Balance imbalanced classes in the loss."),
        patience: int = typer.Option(defaults.patience, min=1, help="Early-stopping patience, epochs."),
        fine_tune: int = typer.Option(0, min=0, help="Second stage: unfreeze this many top backbone layers (0: off)."),
        fine_tune_epochs: int = typer.Option(defaults.fine_tune_epochs, min=1),
        fine_tune_learning_rate: float = typer.Option(defaults.fine_tune_learning_rate, min=0.0),
        val_split: float = typer.Option(0.1, min=0.0, max=0.9, help="Fraction per class for validation (when there is no val/)."),
        test_split: float = typer.Option(0.1, min=0.0, max=0.9, help="Fraction per class for test (when there is no test/)."),
        subset: Optional[int] = typer.Option(None, min=1, help="At most N images per class and split (a quick run)."),
        resize: ResizePolicy = typer.Option(ResizePolicy.CENTER_CROP, help="How images become the input size."),
        engine: FeatureEngine = typer.Option(FeatureEngine.AUTO, help="Feature pass: TFLite copy of the backbone (checked against Keras) or Keras."),
        cache: CacheMode = typer.Option(CacheMode.DISK, help="Keep features on disk ($TLEDGE_CACHE) or only in memory."),
        distribute: Distribute = typer.Option(Distribute.AUTO, help="MirroredStrategy when several accelerators are visible."),
        seed: int = typer.Option(42, help="Fixes the split, shuffling and initialisation."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout (implies --quiet)."),
    ) -> None:
        """Fine-tune a frozen ImageNet backbone on a folder of class folders."""
        from trainer.deps import require_tensorflow

        require_tensorflow("tledge train")
        from trainer.train import train as run_training

        options = _options(**locals())
        result = run_training(options)
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
    ) -> None:
        """Recompute the metrics of a run's Keras model on one of its splits."""
        from trainer.deps import require_tensorflow

        require_tensorflow("tledge evaluate")
        from trainer.evaluate import evaluate_run

        metrics = evaluate_run(run_dir, split, data_root)
        if json_out:
            typer.echo(json.dumps(metrics))
            return
        typer.echo(f"{split}: accuracy {metrics['accuracy']:.4f} on {metrics['n']} images, macro F1 {metrics['macro_f1']}")
        for label, row in metrics["per_class"].items():
            typer.echo(f"  {label:20s} precision {row['precision']:.3f}  recall {row['recall']:.3f}  f1 {row['f1']:.3f}  n {row['support']}")
        if metrics["unreadable"]:
            typer.echo(f"  {len(metrics['unreadable'])} image(s) could not be read")


def _defaults() -> Any:
    from trainer.config import HyperParams

    return HyperParams()


def _print_result(result: Any) -> None:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}%"

    s = result.summary
    typer.echo(f"run: {result.run_dir}")
    typer.echo(f"val accuracy {pct(s['val_accuracy'])}  test accuracy {pct(s['test_accuracy'])}  ({s['evaluation']})")
    if s.get("val_estimate") is not None:
        typer.echo(f"validation estimate (k-fold): {pct(s['val_estimate'])}")
    typer.echo(f"wall time {result.wall_s:.1f} s; next: tledge export {result.run_dir}")
