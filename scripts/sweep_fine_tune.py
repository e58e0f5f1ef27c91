"""Choose the fine-tuning defaults by measurement: cut depth, learning rate, augmented views.

Activations are cached once at the deepest cut swept (with the largest number of
augmented views); shallower cuts are computed from them by the frozen blocks in between.
The head is fitted once per views setting, then each (blocks, learning rate, views)
configuration fine-tunes from that same head with `trainer.fine_tune.fine_tune_top`, the
code `tledge train --fine-tune` runs. Selection is by validation loss and accuracy only:
the test split is not read here (`bench_fine_tune.py` reports it once, for the chosen
defaults).

    .venv/bin/python scripts/sweep_fine_tune.py ../shared/datasets/clothing-small \\
        --weights PATH --blocks 1,2,3 --learning-rates 1e-4,3e-4,1e-3 --views 0,2

Prints progress on stderr and writes scripts/results/sweep_fine_tune.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import numpy as np  # noqa: E402

from bench_common import log, stamp  # noqa: E402
from trainer import cut as cut_lib  # noqa: E402
from trainer import model as model_lib  # noqa: E402
from trainer.config import DataOptions, FineTuneOptions, HyperParams, ModelOptions, RuntimeOptions, TrainOptions, WeightsSpec  # noqa: E402
from trainer.dataset import scan  # noqa: E402
from trainer.features import CLEAN_VIEW  # noqa: E402
from trainer.features.training import feature_rows  # noqa: E402
from trainer.fine_tune import TopData, cut_pass, evaluate_top, fine_tune_top, top_data  # noqa: E402
from trainer.head import class_weights, fit_head  # noqa: E402
from trainer.progress import Reporter  # noqa: E402
from trainer.stats import wilson  # noqa: E402

RESULTS = ROOT / "scripts" / "results"


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _only_views(activations: dict, keep: int) -> dict:
    """The clean view and the first `keep` augmented views of each image."""
    allowed = {CLEAN_VIEW} | {v for (_, v) in activations if v != CLEAN_VIEW and int(v.rsplit("-", 1)[-1]) <= keep}
    return {k: a for k, a in activations.items() if k[1] in allowed}


def _through(model: object, x: np.ndarray, batch: int = 128) -> np.ndarray:
    """Frozen blocks between the deepest cut and a shallower one, float16 out."""
    import tensorflow as tf

    fn = tf.function(lambda t: model(tf.cast(t, tf.float32), training=False))
    return np.concatenate([fn(tf.constant(x[i : i + batch])).numpy().astype(np.float16) for i in range(0, len(x), batch)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--blocks", type=_ints, default=[1, 2, 3])
    parser.add_argument("--learning-rates", type=_floats, default=[1e-4, 3e-4, 1e-3])
    parser.add_argument("--views", type=_ints, default=[0, 2])
    parser.add_argument("--epochs", type=int, default=FineTuneOptions().epochs)
    parser.add_argument("--configs", default=None, help="only these 'blocks:lr:views' triples, comma-separated (a partial grid)")
    parser.add_argument("--output", default="sweep_fine_tune")
    args = parser.parse_args()

    deepest, most_views = max(args.blocks), max(args.views)
    fine = FineTuneOptions(blocks=deepest, augment_views=most_views, epochs=args.epochs)
    options = TrainOptions(
        data=DataOptions(args.data_dir), model=ModelOptions(weights=WeightsSpec.parse(args.weights)),
        hyper=HyperParams(fine_tune=fine), runtime=RuntimeOptions(quiet=True),
    )
    reporter = Reporter(quiet=True)
    header = stamp()
    started = time.perf_counter()
    dataset = scan(options.data.data_dir, seed=options.seed)
    backbone = model_lib.build_backbone(options.model)
    classifier = model_lib.build_classifier(backbone, options.model, len(dataset.labels))
    labels = dataset.labels
    tick = time.perf_counter()
    base, dataset = cut_pass(options, dataset, False, classifier, backbone.digest, os.cpu_count() or 1, reporter)
    log(f"activations at {base.halves.cut.layer}: {base.stats.views_computed} computed, {base.stats.views_cached} cached, {time.perf_counter() - tick:.0f} s")
    features = base.features()
    initial = classifier.get_weights()
    heads: dict[int, list[np.ndarray]] = {}
    head_val: dict[int, dict] = {}
    for views in sorted(set(args.views)):
        classifier.set_weights(initial)
        feats = _only_views(features, views)
        rows = {s: feature_rows(dataset.splits[s], feats, clean_only=s != "train") for s in ("train", "val")}
        fitted = fit_head(replace(options, hyper=replace(options.hyper, augment_views=views)), rows, len(labels), reporter)
        model_lib.copy_head(fitted.head, classifier)
        heads[views] = classifier.get_weights()
        log(f"head on {views} view(s): {fitted.info['epochs_run']} epochs")

    backbone_layer = classifier.get_layer(model_lib.BACKBONE_NAME)
    cuts = {c.blocks: c for c in cut_lib.block_cuts(backbone_layer, options.model.backbone)}
    if args.configs:
        grid = [(int(b), float(lr), int(v)) for b, lr, v in (c.split(":") for c in args.configs.split(","))]
    else:
        grid = [(b, lr, v) for b in args.blocks for lr in args.learning_rates for v in args.views]
    trials = []
    for blocks in sorted({b for b, _, _ in grid}):
        cut = cuts[blocks]
        halves = cut_lib.split(classifier, cut)
        if blocks == deepest:
            acts = base.activations
        else:  # the frozen blocks between the deepest cut and this one
            import keras

            lower = backbone_layer.get_layer(base.halves.cut.layer).output
            mid = keras.Model(lower, backbone_layer.get_layer(cut.layer).output)
            keys = sorted(base.activations)
            stacked = _through(mid, np.stack([base.activations[k] for k in keys]))
            acts = dict(zip(keys, stacked))
        for b, lr, views in grid:
            if b != blocks:
                continue
            classifier.set_weights(heads[views])
            subset = _only_views(acts, views)
            train = top_data(dataset.splits["train"], subset, clean_only=False)
            val = top_data(dataset.splits["val"], subset, clean_only=True)
            table = class_weights(train.y, len(labels))
            weights = np.array([table[int(c)] for c in train.y], dtype=np.float32)
            probs0, _ = evaluate_top(halves.top, val, len(labels))
            tick = time.perf_counter()
            info = fine_tune_top(halves, train, val, len(labels), replace(fine, blocks=blocks, learning_rate=lr, augment_views=views), options.seed, weights)
            seconds = time.perf_counter() - tick
            probs, loss = evaluate_top(halves.top, val, len(labels))
            correct0 = int(np.sum(np.argmax(probs0, 1) == val.y))
            correct = int(np.sum(np.argmax(probs, 1) == val.y))
            trial = {
                "blocks": blocks, "cut": cut.layer, "learning_rate": lr, "augment_views": views, "train_rows": int(len(train.y)),
                "val_head_only": wilson(correct0, len(val.y)).to_json(), "val_fine_tuned": wilson(correct, len(val.y)).to_json(),
                "val_loss_head_only": info["val_loss_before"], "val_loss_best": info["val_loss_best"],
                "best_epoch": info["best_epoch"], "epochs_run": info["epochs_run"], "epoch_s": info["epoch_s"],
                "median_epoch_s": float(np.median(info["epoch_s"])) if info["epoch_s"] else None,
                "fine_tune_s": round(seconds, 2), "load_avg_1m": round(os.getloadavg()[0], 2), "history": info["history"],
            }
            trials.append(trial)
            log(f"blocks {blocks} lr {lr:g} views {views}: val {correct0}->{correct}/{len(val.y)}, loss {info['val_loss_before']}->{info['val_loss_best']}, best epoch {info['best_epoch']}/{info['epochs_run']}, {seconds:.0f} s, load {os.getloadavg()[0]:.1f}")
            _write(args.output, header, args, trials, started)  # after every trial: a killed sweep keeps its rows
    _write(args.output, header, args, trials, started)


def _write(name: str, header: dict, args: argparse.Namespace, trials: list, started: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        **header,
        "what": "fine-tuning sweep on cached activations; selection by val only (test not read)",
        "data_dir": str(args.data_dir),
        "epochs_max": args.epochs,
        "wall_s": round(time.perf_counter() - started, 1),
        "load_avg_end": [round(v, 2) for v in os.getloadavg()],
        "trials": trials,
    }
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
