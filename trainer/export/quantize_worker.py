"""TensorFlow's MLIR quantizer in a process of its own (`trainer.export.backbone_file`).

Run as a script, not imported: ``python quantize_worker.py API OUTPUT``. API is the path of
TensorFlow's compiled converter API (the extension module `tf.lite.TFLiteConverter` calls to
quantize a calibrated model), loaded straight from its file: it needs only TensorFlow's
shared libraries, so the process is ready in about half a second instead of the several
seconds `import tensorflow` takes, and it loads while the calibration runs. It then reads a
pickle of ``(calibrated model bytes, input type, output type)`` from stdin and writes the
quantized model to OUTPUT.

The call is the one the converter makes for a post-training full-integer conversion
(`TFLiteConverterBase._quantize` -> `mlir_quantize`): per-channel weights, int8
activations, the given input/output types (types.proto numbers), no numeric verification,
no deny-lists, no variable quantization, default debug options.
Standard library only, and calibration_worker.py beside it; nothing from the tledge package.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from types import ModuleType

from calibration_worker import load_wrapper  # beside this file: a script's folder is on sys.path

#: types.proto's IODataType numbers (tensorflow/compiler/mlir/lite/types.proto).
QUANTIZED_INT8 = 9
IO_TYPES = {"float32": 1, "uint8": 17, "int8": 18}


def quantize(api: ModuleType, calibrated: bytes, input_type: str, output_type: str) -> bytes:
    """`calibrated` (a float model carrying each tensor's min/max) as a full-integer model."""
    return bytes(
        api.ExperimentalMlirQuantizeModel(
            calibrated,
            False,  # disable_per_channel
            False,  # fully_quantize: mlir_quantize's default, as the converter calls it
            QUANTIZED_INT8,
            IO_TYPES[input_type],
            IO_TYPES[output_type],
            False,  # enable_numeric_verify
            False,  # enable_whole_model_verify
            None,  # op deny-list
            None,  # node deny-list
            False,  # enable_variable_quantization
            False,  # disable_per_channel_for_dense_layers
            b"",  # debug options: the defaults
        )
    )


def main(argv: list[str]) -> int:
    api_path, output_path = argv
    api = load_wrapper(api_path)
    calibrated, input_type, output_type = pickle.load(sys.stdin.buffer)
    Path(output_path).write_bytes(quantize(api, calibrated, input_type, output_type))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
