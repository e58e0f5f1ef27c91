"""One shard of TensorFlow's int8 calibration, in a process of its own (`calibration_shards`).

Run as a script, not imported: ``python calibration_worker.py WRAPPER INPUT OUTPUT``.
WRAPPER is the path of TensorFlow's compiled calibration wrapper (the extension module
its `Calibrator` class drives), INPUT a pickle of ``(float model bytes, samples)``,
OUTPUT where the calibrated model is written. The wrapper is loaded straight from its
file: it needs only TFLite's own shared library, so the process starts in about 0.1 s
instead of the several seconds `import tensorflow` takes.

The calls are the ones `Calibrator.calibrate` makes for samples given as lists of
arrays: `Prepare` with the first sample's shapes, `FeedTensor` per sample, `Calibrate`.
Standard library and numpy only (the wrapper takes numpy arrays); nothing from tledge.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path
from types import ModuleType


def load_wrapper(path: str) -> ModuleType:
    """One of TensorFlow's compiled extension modules (here its calibration wrapper; the
    converter's for quantize_worker.py), loaded from its file (no `import tensorflow`)."""
    name = Path(path).name.split(".")[0]  # the module's init symbol is named after the file
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def calibrate(wrapper: ModuleType, model: bytes, samples: list[list]) -> bytes:
    """The float model with each logged tensor's min and max over `samples`, as TensorFlow writes it."""
    calibrator = wrapper.CalibrationWrapper(model, [], [])
    calibrator.Prepare([list(array.shape) for array in samples[0]])
    for sample in samples:
        calibrator.FeedTensor(sample)
    return bytes(calibrator.Calibrate())


def main(argv: list[str]) -> int:
    wrapper_path, input_path, output_path = argv
    model, samples = pickle.loads(Path(input_path).read_bytes())
    result = calibrate(load_wrapper(wrapper_path), model, samples)
    Path(output_path).write_bytes(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
