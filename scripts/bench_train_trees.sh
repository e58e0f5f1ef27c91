#!/usr/bin/env bash
# `tledge train` on issue 13's stand-in set from two source trees, alternating (A, B, A, B,
# ...), each run its own process: wall and CPU seconds, the run's own stage timings
# (metrics.json "timings"), the load average. One JSON line per run on stdout.
#
#   scripts/bench_train_trees.sh TREE_A TREE_B RUNS cached|cold DATA
#
# cached: the converted backbone (and the engine choice) stay in the cache between runs,
#         the feature cache is emptied before each run (new photos, a machine that has
#         trained before);
# cold:   the whole cache is emptied before each run (the backbone is converted again).
# DATA is the stand-in (scripts/timed_cli.py make_standin). Run it under the bench lock.
set -euo pipefail
a=$1; b=$2; runs=$3; mode=$4; data=$5
py=${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
work=$(mktemp -d /tmp/tledge-train-trees-XXXX)
trap 'rm -rf "$work"' EXIT
export TLEDGE_WEIGHTS=${TLEDGE_WEIGHTS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5}
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONWARNINGS=ignore TLEDGE_CACHE=$work/cache
if [ "$mode" = cached ]; then  # untimed: the backbone converted, and each tree's own records written
  for tree in "$a" "$b"; do
    (cd "$tree" && env PYTHONPATH="$tree" "$py" -m edge.cli train "$data" --out "$work/runs" --json > /dev/null)
  done
fi
for i in $(seq "$runs"); do
  for tree in "$a" "$b"; do
    if [ "$mode" = cold ]; then rm -rf "$work/cache"; else rm -rf "$work/cache/features"; fi
    (cd "$tree" && /usr/bin/time -f "%e %U %S" -o "$work/time" env PYTHONPATH="$tree" "$py" -m edge.cli train "$data" --out "$work/runs" --json > "$work/out.json")
    "$py" - "$tree" "$mode" "$work" <<'PY'
import json, os, subprocess, sys
tree, mode, work = sys.argv[1:]
run = json.load(open(f"{work}/out.json"))
metrics = json.load(open(os.path.join(run["run_dir"], "metrics.json")))
wall, user, system = open(f"{work}/time").read().split()[-3:]
commit = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(json.dumps({"tree": tree, "commit": commit, "mode": mode, "wall_s": float(wall), "cpu_s": round(float(user) + float(system), 1),
                  "timings": metrics["timings"], "convert_s": metrics["features"].get("convert_s"), "val_acc": run["val_accuracy"],
                  "load_avg_1m": os.getloadavg()[0]}))
PY
  done
done
