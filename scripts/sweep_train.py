"""Choose the head's defaults by measurement: one factor at a time around a baseline.

Uses the features a previous `tledge train` cached (run it first with --augment-views at
least the largest value swept, default 2), so each configuration costs only the head fit.
Selection is by validation accuracy; test accuracy is printed for the record only.

    .venv/bin/python scripts/sweep_train.py ../shared/datasets/clothing-small --weights PATH

Prints one JSON line per configuration and writes scripts/out/sweep_train.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer import model as model_lib  # noqa: E402
from trainer.config import DataOptions, HyperParams, ModelOptions, RuntimeOptions, TrainOptions, WeightsSpec, default_cache_dir  # noqa: E402
from trainer.dataset import scan  # noqa: E402
from trainer.evaluate import classification_metrics  # noqa: E402
from trainer.features import CLEAN_VIEW, FeatureCache, Job, extract, model_key, view_names  # noqa: E402
from trainer.progress import Reporter  # noqa: E402
from trainer.features.training import feature_rows as _arrays  # noqa: E402
from trainer.head import fit_head  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--max-views", type=int, default=2)
    args = parser.parse_args()

    base = TrainOptions(data=DataOptions(args.data_dir), model=ModelOptions(weights=WeightsSpec.parse(args.weights)), runtime=RuntimeOptions(quiet=True))
    dataset = scan(base.data.data_dir, seed=base.seed)
    backbone = model_lib.build_backbone(base.model)
    key = model_key(base.model.backbone.value, base.model.alpha, base.model.image_size, base.model.resize.value, backbone.digest)
    cache = FeatureCache(base.runtime.cache, default_cache_dir(), key)
    views = view_names(args.max_views, base.seed)
    jobs = [Job(s, views if split == "train" else (CLEAN_VIEW,)) for split in ("train", "val", "test") for s in dataset.splits[split]]

    def no_engine(_probe: object) -> object:
        raise SystemExit("features are not cached: run tledge train on this data with these weights first")

    features, _, _ = extract(jobs, cache, no_engine, base.model.image_size, base.model.resize, threads=2)
    defaults = HyperParams()
    trials = [("baseline", {})]
    trials += [(f"augment_views={v}", {"augment_views": v}) for v in range(args.max_views + 1) if v != defaults.augment_views]
    trials += [(f"batch_size={b}", {"batch_size": b}) for b in (32, 128, 256) if b != defaults.batch_size]
    trials += [(f"learning_rate={lr}", {"learning_rate": lr}) for lr in (3e-4, 1e-3, 3e-3) if lr != defaults.learning_rate]
    trials += [(f"label_smoothing={s}", {"label_smoothing": s}) for s in (0.0, 0.1, 0.2) if s != defaults.label_smoothing]
    trials += [(f"dropout={d}", {"dropout": d}) for d in (0.0, 0.2, 0.5) if d != base.model.dropout]
    trials += [("no class weights", {"class_weights": False})]
    results = []
    for name, change in trials:
        dropout = change.pop("dropout", base.model.dropout)
        options = replace(base, hyper=replace(defaults, **change), model=replace(base.model, dropout=dropout))
        kept = set(view_names(options.hyper.augment_views, base.seed))
        subset = {k: v for k, v in features.items() if k[1] in kept}
        arrays = {s: _arrays(dataset.splits[s], subset, clean_only=s != "train") for s in ("train", "val", "test")}
        start = time.perf_counter()
        fitted = fit_head(options, arrays, len(dataset.labels), Reporter(quiet=True))
        head, info = fitted.head, fitted.info
        seconds = time.perf_counter() - start
        scores = {s: classification_metrics(arrays[s].y, head.predict(arrays[s].x), dataset.labels)["accuracy"] for s in ("val", "test")}
        row = {"trial": name, "val_acc": scores["val"], "test_acc": scores["test"], "head_s": round(seconds, 2), "epochs": info["epochs_run"], "best_epoch": info["best_epoch"]}
        print(json.dumps(row), flush=True)
        results.append(row)
    out = ROOT / "scripts" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep_train.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
