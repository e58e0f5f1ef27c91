#!/usr/bin/env bash
# The Raspberry Pi path, measured: tledge's edge runtime on an emulated 64-bit Pi OS
# userland (Debian arm64 under QEMU user-mode emulation). Root; minutes to an hour; not
# part of the default test run.
#
#   sudo scripts/pi_check.sh                 # Bookworm (Python 3.11) and Trixie (Python 3.13)
#   sudo scripts/pi_check.sh bookworm        # one suite
#
# For each suite it builds (or reuses from $PI_CACHE) a bare arm64 rootfs with
# `debootstrap --variant=minbase` + python3-venv + ca-certificates (no X, no GL: a headless
# "Lite" image), installs tledge there from a wheel built from this working tree exactly as
# the README tells a Pi user (`pip install tledge-*.whl`, core only; later `[serve]`), and
# runs the edge commands on Google's quantized MobileNet (../shared) and on a bundle
# exported here on x86. Top-1 labels and scores are compared with the x86 run. The table
# is printed and written as JSON (scripts/results/pi_check-DATE.json).
#
# Environment:
#   PI_CACHE    rootfs + pip cache + work folders (default /var/cache/tledge-pi; keep it
#               outside the repository)
#   PI_MIRROR   Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   PI_KEYRING  archive keyring (default /usr/share/keyrings/debian-archive-keyring.gpg;
#               Bookworm's debian-archive-keyring already holds the Trixie keys)
#   PI_SHARED   the shared data folder (default ../shared next to the repository)
#   PI_RESULTS  the JSON result file (default scripts/results/pi_check-YYYYMMDD.json)
#   TLEDGE_VENV the host venv with tledge[train] (default .venv; scripts/_venv.sh makes it)
#   TLEDGE_WEIGHTS  ImageNet weights for the x86 bundle (else the demo says it is random)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PI_CACHE="${PI_CACHE:-/var/cache/tledge-pi}"
PI_MIRROR="${PI_MIRROR:-http://deb.debian.org/debian}"
PI_KEYRING="${PI_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
PI_SHARED="${PI_SHARED:-$ROOT/../shared}"
PI_RESULTS="${PI_RESULTS:-$ROOT/scripts/results/pi_check-$(date -u +%Y%m%d).json}"
HOST_VENV="${TLEDGE_VENV:-$ROOT/.venv}"
SUITES=("$@")
[ ${#SUITES[@]} -gt 0 ] || SUITES=(bookworm trixie)
INSIDE=/tmp/tledge-pi  # where WORK appears inside the chroot

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'pi_check: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and mounts need it): sudo $0 $*"
case "$PI_CACHE" in "$ROOT"|"$ROOT"/*) die "PI_CACHE must be outside the repository ($PI_CACHE)";; esac
[ -f "$PI_SHARED/models/mobilenet_v2_1.0_224_quant.tflite" ] || die "Google's model is missing: $PI_SHARED/models/mobilenet_v2_1.0_224_quant.tflite (set PI_SHARED)"
[ -x "$HOST_VENV/bin/tledge" ] || die "no host venv with tledge at $HOST_VENV: run scripts/_venv.sh first (bash -c 'source scripts/_venv.sh')"

# --- tools and binfmt -----------------------------------------------------------------
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
[ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || [ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
[ -f "$PI_KEYRING" ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc (a container may need --privileged)"
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 || die "cannot register qemu-aarch64 with binfmt_misc"
mkdir -p "$PI_CACHE/debs" "$PI_CACHE/pip"

# --- the wheel, the x86 bundle and the x86 reference -------------------------------------
STAMP="$(date -u +%Y%m%d-%H%M%S)"
RUN="$PI_CACHE/run-$STAMP"
mkdir -p "$RUN/dist"
say "building the tledge wheel from the working tree"
"$HOST_VENV/bin/python" -m pip wheel -q --no-deps -w "$RUN/dist" . >"$RUN/wheel.log" 2>&1 || { cat "$RUN/wheel.log" >&2; die "wheel build failed"; }
WHEEL="$(ls "$RUN"/dist/tledge-*.whl)"

DEMO="$PI_CACHE/x86-demo"
if [ ! -f "$DEMO/bundle/manifest.json" ]; then
  say "exporting a small int8 bundle on x86 (tledge demo, 96 px)"
  rm -rf "$DEMO"
  TF_CPP_MIN_LOG_LEVEL=2 "$HOST_VENV/bin/tledge" demo --work-dir "$DEMO" --images-per-class 24 --quiet --json >"$PI_CACHE/x86-demo.json"
fi
[ -f "$DEMO/bundle/manifest.json" ] || die "the x86 demo wrote no bundle at $DEMO/bundle"

stage_inputs() {  # $1 = WORK folder: everything both sides read
  local in="$1/in"
  mkdir -p "$in/google" "$in/photos" "$in/bundle_images" "$1/out"
  cp "$WHEEL" "$in/"
  cp "$PI_SHARED/models/mobilenet_v2_1.0_224_quant.tflite" "$in/google/model.tflite"
  cp "$PI_SHARED/models/imagenet_labels.txt" "$in/google/labels.txt"
  cp "$PI_SHARED"/images/*.png "$PI_SHARED"/images/*.jpg "$in/photos/" 2>/dev/null || true
  cp -r "$DEMO/bundle" "$in/bundle"
  # 3 test images per class of the demo's dataset (drawn on x86: same pixels on both sides)
  local cls base="$DEMO/data"
  [ -d "$base/test" ] && base="$base/test"
  for cls in "$base"/*/; do
    find "$cls" -type f -name '*.png' | sort | head -3 | xargs -r cp -t "$in/bundle_images/"
  done
  "$HOST_VENV/bin/python" -c "from trainer.synthetic import make_video; make_video('$in/video_x86.avi', frames_per_class=30, size=(160, 120))"
  cp "$ROOT/scripts/pi_check_steps.py" "$1/"
}

# --- per suite: rootfs, chroot run -------------------------------------------------------
MOUNTS=()
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
  MOUNTS=()
}
trap cleanup EXIT

build_rootfs() {  # $1 = suite; a finished rootfs has python3 and no /debootstrap left
  local suite="$1" rootfs="$PI_CACHE/rootfs-$1-arm64"
  if [ -x "$rootfs/usr/bin/python3" ] && [ ! -d "$rootfs/debootstrap" ]; then
    say "$suite: reusing $rootfs"
    return
  fi
  say "$suite: debootstrap --arch=arm64 --variant=minbase (emulated: 15-40 min)"
  rm -rf "$rootfs"
  debootstrap --arch=arm64 --variant=minbase --include=python3-venv,ca-certificates \
    --keyring="$PI_KEYRING" --cache-dir="$PI_CACHE/debs" "$suite" "$rootfs" "$PI_MIRROR" \
    >"$PI_CACHE/debootstrap-$suite.log" 2>&1 || { tail -20 "$PI_CACHE/debootstrap-$suite.log" >&2; die "debootstrap $suite failed"; }
}

bind() {  # $1 source, $2 target inside the rootfs
  mkdir -p "$2"
  mount --bind "$1" "$2"
  MOUNTS+=("$2")
}

run_suite() {
  local suite="$1" rootfs="$PI_CACHE/rootfs-$1-arm64" work="$RUN/$1"
  build_rootfs "$suite"
  chroot "$rootfs" /bin/true || die "$suite: an arm64 binary does not run (binfmt_misc / qemu-user-static)"
  stage_inputs "$work"
  say "$suite: x86 reference run"
  "$HOST_VENV/bin/python" "$work/pi_check_steps.py" reference "$work" --tledge "$HOST_VENV/bin/tledge"
  # The chroot uses the host's name resolution and any local CA (a proxy's) so pip works.
  cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"
  cp /etc/hosts "$rootfs/etc/hosts"
  local pip_env=()
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    local crt changed=0
    for crt in /usr/local/share/ca-certificates/*.crt; do
      cmp -s "$crt" "$rootfs/usr/local/share/ca-certificates/${crt##*/}" || { cp "$crt" "$rootfs/usr/local/share/ca-certificates/"; changed=1; }
    done
    # emulated, update-ca-certificates takes minutes: only when a certificate is new
    [ "$changed" = 0 ] || chroot "$rootfs" /usr/sbin/update-ca-certificates >/dev/null 2>&1 || true
    pip_env=(PIP_CERT=/etc/ssl/certs/ca-certificates.crt)  # pip trusts certifi's list, not the system's
  fi
  [ -n "${PIP_INDEX_URL:-}" ] && pip_env+=("PIP_INDEX_URL=$PIP_INDEX_URL")
  mountpoint -q "$rootfs/proc" || { mount -t proc proc "$rootfs/proc"; MOUNTS+=("$rootfs/proc"); }
  bind /dev "$rootfs/dev"
  bind "$work" "$rootfs$INSIDE"
  bind "$PI_CACHE/pip" "$rootfs/root/.cache/pip"
  say "$suite: inside the arm64 chroot (emulated: slow)"
  chroot "$rootfs" /usr/bin/env -i HOME=/root PATH=/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 PIP_ROOT_USER_ACTION=ignore "${pip_env[@]}" \
    /usr/bin/python3 "$INSIDE/pi_check_steps.py" device "$INSIDE" || true
  cleanup
}

WORKS=()
for suite in "${SUITES[@]}"; do
  run_suite "$suite"
  WORKS+=("$RUN/$suite")
done

meta="$("$HOST_VENV/bin/python" - "$WHEEL" "$PI_MIRROR" <<'EOF'
import json, os, platform, subprocess, sys
cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name")), "?")
qemu = subprocess.run(["/usr/bin/qemu-aarch64-static", "--version"], capture_output=True, text=True).stdout.splitlines()
print(json.dumps({
    "tledge_version": os.path.basename(sys.argv[1]).split("-")[1],
    "wheel": os.path.basename(sys.argv[1]),
    "host": {"machine": platform.machine(), "cpu": cpu, "loadavg": os.getloadavg(), "qemu": qemu[0] if qemu else "?"},
    "mirror": sys.argv[2],
    "command": "sudo scripts/pi_check.sh",
}))
EOF
)"
"$HOST_VENV/bin/python" "$ROOT/scripts/pi_check_steps.py" report "${WORKS[@]}" --output "$PI_RESULTS" --meta "$meta"
