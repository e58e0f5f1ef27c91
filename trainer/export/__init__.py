"""`tledge export`: a training run -> a verified, self-describing .tflite bundle.

    run folder ──convert──> .tflite ──check file──> + metadata ──verify (edge runtime)──> bundle

One job per module:

- ``options``: ExportOptions, QuantizationMode, IOType (frozen, no side effects);
- ``exporter``: `export()`, the orchestration above, and the checks of the produced file;
- ``convert``: Keras -> .tflite per quantization mode, calibration sampling;
- ``backbone_file``: int8 from the training run's float backbone file and head instead
  (no Keras, no `import tensorflow`; TensorFlow's calibrator and quantizer in workers);
- ``calibration``: int8 ranges measured with the edge runtime's interpreter, for TensorFlow's quantizer;
- ``calibration_shards``: TensorFlow's calibrator on shards of the images at once, exactly;
- ``bias_correction``: int8 weight-rounding mean shift, cancelled before conversion;
- ``input_means``: its statistics from the run's float TFLite backbone, in a process of its own;
- ``signature``: the serving signature, written into the directly converted file;
- ``schema``: the one source of the TFLite flatbuffer schema bindings;
- ``tflite_inspect``: what a .tflite really holds (ops, tensor types, I/O);
- ``metadata``: the standard TFLite metadata, labels and tledge.json embedded in the file;
- ``verify``: the .tflite run with the edge runtime against the Keras model, and the verdict;
- ``bundle_writer``: staging folder, atomic replace of the bundle, recovery;
- ``render``: the report as terminal tables.

The names below are imported on first use, so `import trainer.export.options` (what the
CLI needs to declare its flags) stays light.

>>> result = export("runs/clothing", ExportOptions.for_int8())
>>> result.report["splits"]["test"]["tflite_accuracy"]
"""

from __future__ import annotations

from edge.lazy import lazy_getattr

_LAZY = {
    "export": "trainer.export.exporter",
    "ExportResult": "trainer.export.exporter",
    "CalibrationWarning": "trainer.export.exporter",
    "check_file": "trainer.export.exporter",
    "ExportOptions": "trainer.export.options",
    "IOType": "trainer.export.options",
    "QuantizationMode": "trainer.export.options",
    "VerificationFailed": "trainer.export.verify",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
