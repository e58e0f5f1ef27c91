#!/usr/bin/env python
"""The NumPy head (trainer.head) against Keras' `fit` of the same head, seed by seed, on the
features a `tledge train` run cached: validation and test accuracy, epochs, seconds.

The two follow the same rules (Adam, class weights, label smoothing, dropout, early
stopping on val loss with the best epoch restored; tests/trainer/test_head.py checks the
arithmetic step by step) but draw their random numbers differently (initial weights,
dropout masks, batch order), so single heads differ; this measures whether the
distributions over seeds do. Keras' side is trainer.head_keras' compiled head under the
default strategy: what `tledge train` fitted before the NumPy head.

    .venv/bin/python scripts/compare_heads.py ../shared/datasets/clothing-small --weights PATH [--seeds 5] [--output NAME]

Run `tledge train DATA` with the same weights and cache first (the features must be
cached). Prints one JSON line per fit; with --output, writes scripts/results/NAME.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from timed_cli import lscpu_model, tree_commit, write_result  # noqa: E402
from trainer.config import DataOptions, ModelOptions, RuntimeOptions, TrainOptions, WeightsSpec  # noqa: E402
from trainer.dataset import scan  # noqa: E402
from trainer.features.prepared import prepared_backbone  # noqa: E402
from trainer.features.training import ENGINE_BATCH, feature_pass, feature_rows  # noqa: E402
from trainer.head import fit_dense  # noqa: E402
from trainer.progress import Reporter  # noqa: E402


def keras_fit(options: TrainOptions, rows: dict[str, Any], classes: int) -> tuple[Any, int]:
    """Keras' `fit` of the head, as `tledge train` ran it before the NumPy head."""
    import keras

    from trainer.head_keras import compile_head, head_dataset
    from trainer.head import DenseHead, row_weights

    keras.utils.set_random_seed(options.seed)
    head = compile_head(options, rows["train"].x.shape[1], classes)
    data = head_dataset(rows["train"].x, rows["train"].y, classes, options.hyper.batch_size, options.seed, row_weights(rows["train"].y, classes, balanced=True), shuffle=True)
    validation = head_dataset(rows["val"].x, rows["val"].y, classes, 1024, options.seed)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=options.hyper.patience, restore_best_weights=True)
    history = head.fit(data, epochs=options.hyper.epochs, validation_data=validation, callbacks=[stop], shuffle=False, verbose=0).history
    kernel, bias = head.get_layer("probs").get_weights()
    return DenseHead(kernel, bias), len(history["loss"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--output", help="file name under scripts/results/ (without .json)")
    args = parser.parse_args()

    options = TrainOptions(data=DataOptions(args.data_dir), model=ModelOptions(weights=WeightsSpec.parse(args.weights)), runtime=RuntimeOptions(quiet=True))
    dataset = scan(options.data.data_dir, options.data.val_split, options.data.test_split, options.seed)
    prepared = prepared_backbone(options, 2, ENGINE_BATCH)
    if prepared is None:
        raise SystemExit("no converted backbone for these weights in the cache: run tledge train on this data with these weights first")
    features, stats, dataset = feature_pass(options, dataset, False, None, prepared.digest, 2, Reporter(quiet=True), engine=prepared.engine)
    if stats.views_computed:
        print(f"note: {stats.views_computed} feature(s) were not cached and were computed", file=sys.stderr)
    rows = {s: feature_rows(dataset.splits[s], features, clean_only=s != "train") for s in ("train", "val", "test")}
    classes = len(dataset.labels)
    fits = []
    for seed in range(args.seeds):
        seeded = replace(options, seed=seed)
        for side in ("numpy", "keras"):
            tick = time.perf_counter()
            if side == "numpy":
                head, history = fit_dense(rows["train"].x, rows["train"].y, classes, seeded, seed, seeded.hyper.epochs, rows["val"])
                epochs = len(history["loss"])
            else:
                head, epochs = keras_fit(seeded, rows, classes)
            seconds = time.perf_counter() - tick
            accuracy = {s: round(float((head.predict(rows[s].x).argmax(1) == rows[s].y).mean()), 4) for s in ("val", "test")}
            fit = {"side": side, "seed": seed, "val_acc": accuracy["val"], "test_acc": accuracy["test"], "epochs": epochs, "seconds": round(seconds, 2)}
            print(json.dumps(fit), flush=True)
            fits.append(fit)
    summary = {
        side: {key: round(statistics.median(f[key] for f in fits if f["side"] == side), 4) for key in ("val_acc", "test_acc", "epochs", "seconds")}
        for side in ("numpy", "keras")
    }
    result = {
        "command": "scripts/compare_heads.py " + " ".join(sys.argv[1:]),
        "tree_commit": tree_commit(ROOT), "cpu": lscpu_model(), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": str(args.data_dir.name), "images": {s: len(rows[s].y) for s in rows}, "median": summary, "fits": fits,
    }
    print(json.dumps({"median": summary}))
    if args.output:
        write_result(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
