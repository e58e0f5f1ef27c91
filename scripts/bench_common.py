"""Shared parts of the benchmark scripts: paths, the machine, models, statistics, JSON.

Only the benchmark scripts import this. It never imports TensorFlow itself: the
development models are converted in a child process (`make_dev_models`), so the
processes that time the edge runtime never carry TensorFlow's libraries.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "scripts" / "out"
SHARED = ROOT.parent / "shared"
GOOGLE_MODEL = SHARED / "models" / "mobilenet_v2_1.0_224_quant.tflite"
GOOGLE_LABELS = SHARED / "models" / "imagenet_labels.txt"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
DEV_MODELS = OUT / "dev-models"
#: Where `scripts/bench_export.py` leaves its bundles (one folder per quantization mode).
EXPORT_BUNDLES = OUT / "bench_bundles"
MODES = ("float32", "float16", "dynamic", "int8")
#: Peak fp32 multiply-adds per cycle per core: 2 FMA pipes x 8 fp32 lanes (256-bit).
#: Zen 4 runs AVX-512 as two 256-bit halves, so AVX-512 does not raise this.
FP32_MACS_PER_CYCLE = 16

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# -- the machine -------------------------------------------------------------------
def _cpuinfo() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_mhz() -> float:
    """Clock of the first core as /proc/cpuinfo reports it (MHz; 0 if unknown)."""
    try:
        return float(_cpuinfo().get("cpu MHz", "0"))
    except ValueError:
        return 0.0


def _mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return 0.0


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, load, Python and package versions: where the figures came from."""
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    packages = ("tledge", "ai-edge-litert", "tensorflow", "keras", "numpy", "opencv-python", "opencv-python-headless", "pillow", "tflite-runtime")
    return {
        "cpu": cpu.get("model name", platform.processor() or "unknown"),
        "cpu_mhz": cpu_mhz(),
        "cores": os.cpu_count() or 1,
        "simd": sorted(flags & {"avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni"}),
        "ram_gib": _mem_total_gib(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "packages": {name: v for name in packages if (v := _version(name))},
        "core_measured": measure_core(),
    }


#: A microbenchmark of the core itself (C, built with the system's gcc): the clock from a
#: chain of dependent integer adds (1 cycle each), and fp32 FMA throughput from 12
#: independent 256-bit FMA chains (enough to fill 2 pipes of 4-cycle latency). Both timed
#: in thread CPU time, so other processes' load does not lower them.
_PEAK_C = r"""
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    long iters = argc > 1 ? atol(argv[1]) : 100000000L;
    unsigned long x = 0;
    double t0 = cpu_now();
    for (long i = 0; i < iters; i++)
        __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
    double ghz = 4.0 * iters / (cpu_now() - t0) / 1e9;
    __m256 a0 = _mm256_set1_ps(1.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
    __m256 b = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
    long fiters = iters / 2;
    t0 = cpu_now();
    for (long i = 0; i < fiters; i++) {
        __asm__ volatile(
            "vfmadd231ps %[b], %[c], %[a0]\n\tvfmadd231ps %[b], %[c], %[a1]\n\tvfmadd231ps %[b], %[c], %[a2]\n\t"
            "vfmadd231ps %[b], %[c], %[a3]\n\tvfmadd231ps %[b], %[c], %[a4]\n\tvfmadd231ps %[b], %[c], %[a5]\n\t"
            "vfmadd231ps %[b], %[c], %[a6]\n\tvfmadd231ps %[b], %[c], %[a7]\n\tvfmadd231ps %[b], %[c], %[a8]\n\t"
            "vfmadd231ps %[b], %[c], %[a9]\n\tvfmadd231ps %[b], %[c], %[a10]\n\tvfmadd231ps %[b], %[c], %[a11]"
            : [a0] "+x"(a0), [a1] "+x"(a1), [a2] "+x"(a2), [a3] "+x"(a3), [a4] "+x"(a4), [a5] "+x"(a5),
              [a6] "+x"(a6), [a7] "+x"(a7), [a8] "+x"(a8), [a9] "+x"(a9), [a10] "+x"(a10), [a11] "+x"(a11)
            : [b] "x"(b), [c] "x"(c));
    }
    double fma_s = cpu_now() - t0;
    printf("{\"clock_ghz\": %.3f, \"fp32_gmac_per_s_per_core\": %.2f, \"fp32_macs_per_cycle\": %.2f}\n",
           ghz, fiters * 12.0 * 8 / fma_s / 1e9, fiters * 12.0 * 8 / fma_s / 1e9 / ghz);
    return (int)(x & 0);
}
"""


def measure_core() -> dict[str, float] | None:
    """{"clock_ghz", "fp32_gmac_per_s_per_core", "fp32_macs_per_cycle"} measured on one
    core (best of 3), or None where no C compiler is available. Cached per session."""
    global _CORE
    if _CORE is not None:
        return _CORE or None
    OUT.mkdir(parents=True, exist_ok=True)
    binary = OUT / "cpu_peak"
    source = OUT / "cpu_peak.c"
    try:
        if not binary.is_file() or not source.is_file() or source.read_text() != _PEAK_C:
            source.write_text(_PEAK_C)
            subprocess.run(["gcc", "-O2", "-mavx2", "-mfma", "-o", str(binary), str(source)], check=True, capture_output=True, timeout=120)
        runs = [json.loads(subprocess.run([str(binary), "200000000"], check=True, capture_output=True, text=True, timeout=120).stdout) for _ in range(3)]
    except (OSError, subprocess.SubprocessError, ValueError):
        _CORE = {}
        return None
    _CORE = max(runs, key=lambda r: r["fp32_gmac_per_s_per_core"])
    return _CORE


_CORE: dict[str, float] | None = None


def fp32_peak_gmacs(threads: int) -> float:
    """Peak fp32 multiply-adds per second (G) on `threads` cores: measured when a C
    compiler is there (the boost clock of a VM is not in /proc/cpuinfo), else 16 per
    cycle at the reported clock."""
    core = measure_core()
    per_core = core["fp32_gmac_per_s_per_core"] if core else FP32_MACS_PER_CYCLE * cpu_mhz() / 1000.0
    return per_core * threads


# -- statistics and output -----------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def percent(value: float | None, missing: str = "") -> str:
    """A proportion as "93.4%", or `missing` when there is none."""
    return missing if value is None else f"{100 * value:.1f}%"


def accuracy(value: float | None, n: int | None, missing: str = "") -> str:
    """An accuracy with its 95 % Wilson interval and n; bare when n was not recorded."""
    if value is None or not n:
        return percent(value, missing)
    from trainer.stats import format_accuracy  # the project's own formatting (ROOT is on sys.path)

    return format_accuracy(float(value), int(n))


def command_line() -> str:
    """The command that is running, as a user would type it from the repo root."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(ROOT))
    except ValueError:
        shown = str(script)
    return " ".join(shlex.quote(a) for a in [shown, *sys.argv[1:]])


def write_json(name: str, data: dict[str, Any]) -> Path:
    """Write scripts/out/<name>.json atomically and print it (machine-readable results)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    text = json.dumps(data, indent=2, default=str)
    fd, tmp = tempfile.mkstemp(dir=OUT, prefix=f".{name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as stream:
        stream.write(text + "\n")
    os.replace(tmp, path)
    print(text)
    return path


def stamp() -> dict[str, Any]:
    """The common header of every result file."""
    return {
        "command": command_line(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
    }


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the JSON result."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- models --------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRef:
    """A model to measure: a bundle folder or a bare .tflite, and a short name."""

    name: str
    path: Path  # what `tledge` accepts: the bundle folder or the .tflite
    tflite: Path  # the model file itself
    labels: Path | None  # for bare third-party .tflite files
    mode: str  # float32 / float16 / dynamic / int8 / uint8 (third party) / unknown


def _mode_of(path: Path) -> str:
    manifest = path / "manifest.json"
    if manifest.is_file():
        try:
            return str(json.loads(manifest.read_text()).get("quantization", "unknown"))
        except (OSError, ValueError):
            return "unknown"
    stem = path.stem if path.is_file() else path.name
    for mode in ("float32", "float16", "dynamic", "int8", "quant"):
        if mode in stem:
            return "uint8" if mode == "quant" else mode
    return "unknown"


def _ref(path: Path) -> ModelRef:
    if path.is_dir():
        tflite, mode = path / "model.tflite", _mode_of(path)
        name = path.name
        if name == mode:  # bench_export.py's <mode>/ folders: say whose model it is
            try:
                name = f"{json.loads((path / 'manifest.json').read_text())['name']}-{mode}"
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return ModelRef(name, path, tflite, None, mode)
    labels = GOOGLE_LABELS if path == GOOGLE_MODEL else None
    if labels is None and (path.parent / "manifest.json").is_file():
        return _ref(path.parent)
    return ModelRef(path.stem, path, path, labels, _mode_of(path))


def expand_models(paths: Iterable[str | Path]) -> list[ModelRef]:
    """--model arguments -> models. A folder is a bundle, or holds bundles / .tflite files."""
    found: list[ModelRef] = []
    for raw in paths:
        path = Path(raw).resolve()
        if not path.exists():
            raise SystemExit(f"--model {raw}: no such file or folder")
        if path.is_file() or (path / "manifest.json").is_file() or (path / "model.tflite").is_file():
            found.append(_ref(path))
            continue
        children = sorted(p for p in path.iterdir() if (p / "model.tflite").is_file() or p.suffix == ".tflite")
        if not children:
            raise SystemExit(f"--model {raw}: holds no bundle folders or .tflite files")
        found.extend(_ref(p) for p in children)
    names = [m.name for m in found]
    found = [replace(m, name=f"{m.name}-{m.mode}") if names.count(m.name) > 1 and m.mode not in m.name else m for m in found]
    order = {m: i for i, m in enumerate(MODES)}
    return sorted(found, key=lambda m: (order.get(m.mode, len(order)), m.name))


def _bundles_in(folder: Path) -> list[Path]:
    """Bundle folders at most two levels below `folder` (<mode>/ or <mode>/<name>/)."""
    if not folder.is_dir():
        return []
    found = [m.parent for m in folder.glob("*/manifest.json")] + [m.parent for m in folder.glob("*/*/manifest.json")]
    return sorted(found)


def default_models(reference: bool = False) -> list[ModelRef]:
    """The exporter's four clothing-small bundles when bench_export.py has made them,
    else the development set: float32/float16/dynamic/int8 conversions of the real
    MobileNetV2 (random 10-class head, same compute). `reference` adds Google's uint8
    MobileNetV2 (a model this project did not make) when ../shared has it."""
    bundles = _bundles_in(EXPORT_BUNDLES)
    models = expand_models(bundles) if bundles else expand_models(make_dev_models())
    if reference and GOOGLE_MODEL.is_file():
        models.append(_ref(GOOGLE_MODEL))
    return models


def make_dev_models() -> list[Path]:
    """Convert MobileNetV2 1.0 @ 224 (real ImageNet weights) to the four modes, once,
    in a child process that imports TensorFlow. Returns the .tflite paths."""
    wanted = [DEV_MODELS / f"mobilenet_v2_{mode}.tflite" for mode in MODES]
    if not all(p.is_file() for p in wanted):
        log("converting the development models with TensorFlow (once; cached in scripts/out/dev-models)")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "make-dev-models"], check=True, env=env)
    return wanted


def _convert_dev_models() -> None:
    """Child-process body of `make_dev_models` (imports TensorFlow)."""
    import numpy as np
    import tensorflow as tf

    keras = tf.keras
    weights = str(WEIGHTS) if WEIGHTS.is_file() else None  # None: random weights, same compute
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)  # raw pixels in, like tledge bundles
    base = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights=weights, pooling="avg")
    outputs = keras.layers.Dense(10, activation="softmax")(base(x))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(16):
            yield [rng.integers(0, 256, (1, 224, 224, 3)).astype(np.float32)]

    DEV_MODELS.mkdir(parents=True, exist_ok=True)
    for mode in MODES:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if mode != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if mode == "int8":
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
        data = converter.convert()
        target = DEV_MODELS / f"mobilenet_v2_{mode}.tflite"
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        log(f"wrote {target} ({len(data) / 1e6:.1f} MB)")


# -- multiply-adds counted from the flatbuffer ----------------------------------------
def count_macs(model_bytes: bytes) -> dict[str, int]:
    """Multiply-adds of one inference per op type (CONV_2D, DEPTHWISE_CONV_2D,
    FULLY_CONNECTED), from the tensor shapes in the model file."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(model_bytes, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    totals = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 0, "FULLY_CONNECTED": 0}
    for graph in model.subgraphs:
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
            if name not in totals:
                continue
            out = [max(1, int(d)) for d in graph.tensors[op.outputs[0]].shape]
            weights = [int(d) for d in graph.tensors[op.inputs[1]].shape]
            if name == "CONV_2D":  # out (N,H,W,Co), filter (Co,Kh,Kw,Ci)
                totals[name] += out[0] * out[1] * out[2] * weights[0] * weights[1] * weights[2] * weights[3]
            elif name == "DEPTHWISE_CONV_2D":  # filter (1,Kh,Kw,Co)
                totals[name] += out[0] * out[1] * out[2] * out[3] * weights[1] * weights[2]
            else:  # out (N,units), weights (units,in)
                batch = 1
                for d in out[:-1]:
                    batch *= d
                totals[name] += batch * weights[0] * weights[1]
    return totals


if __name__ == "__main__":
    if sys.argv[1:] == ["make-dev-models"]:
        _convert_dev_models()
    else:
        raise SystemExit("usage: bench_common.py make-dev-models")
