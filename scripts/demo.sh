#!/usr/bin/env bash
# The main job end to end on built-in data: creates/refreshes .venv, installs tledge,
# then draws a dataset, trains, exports int8, verifies it and classifies a generated
# video (`tledge demo`). Extra arguments go to `tledge demo` (see `tledge demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
# Real ImageNet weights beside the repo (developer and CI machines): use them.
if [ -z "${TLEDGE_WEIGHTS:-}" ] && [ -f ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 ]; then
  export TLEDGE_WEIGHTS="$(cd ../shared/weights && pwd)/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
fi
exec "$VENV/bin/tledge" demo "$@"
