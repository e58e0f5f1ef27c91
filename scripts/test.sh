#!/usr/bin/env bash
# Run the test suite on a fresh machine: creates/refreshes .venv, installs tledge with
# its training and test extras, installs Chromium for the browser test and Mosquitto for
# the MQTT tests when missing
# (Debian/Ubuntu, as root), then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh

if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing Debian's chromium for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "   chromium could not be installed; the browser test will skip"
fi

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing Debian's mosquitto for the MQTT event tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null) \
    || echo "   mosquitto could not be installed; the MQTT tests will skip"
fi

# Real ImageNet weights beside the repo (CI and developer machines): use them.
if [ -z "${TLEDGE_WEIGHTS:-}" ] && [ -f ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 ]; then
  export TLEDGE_WEIGHTS="$(cd ../shared/weights && pwd)/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
fi

echo "== pytest"
exec "$VENV/bin/python" -m pytest "$@"
