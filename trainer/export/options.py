"""Options of `tledge export`: frozen dataclasses and str-Enums, no side effects.

Change one with `dataclasses.replace(options, ...)`; the exporter never mutates them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Mapping

from trainer.errors import ExportError


class QuantizationMode(str, Enum):
    """How the float Keras model becomes a .tflite file."""

    INT8 = "int8"  # full-integer: int8 weights and activations, integer I/O
    FLOAT16 = "float16"  # float16 weights, float32 compute and I/O
    DYNAMIC = "dynamic"  # int8 weights, float activations (dynamic-range)
    FLOAT32 = "float32"  # no quantization


class IOType(str, Enum):
    """Input/output tensor type of a full-integer (int8) model."""

    UINT8 = "uint8"  # raw camera pixels go in as they are (scale 1, zero point 0)
    INT8 = "int8"  # for accelerators that want signed I/O


class CalibratorKind(str, Enum):
    """What measures the int8 ranges (trainer/export/calibration.py); the quantizer is TensorFlow's either way."""

    LITERT = "litert"  # the edge runtime's interpreter (XNNPACK): TensorFlow's ranges to float rounding, faster
    TENSORFLOW = "tensorflow"  # TensorFlow's own calibrator (the default), on one shard of the images per CPU (calibration_shards)


#: Environment variable that chooses the calibrator when the options do not.
#: TensorFlow's stays the default: LiteRT's ranges differ from it by float rounding
#: (about 1e-6 relative), and int8 top-1 agreement moves by that alone more than the
#: calibration guard (tests/export/test_calibration_guard.py) allows; see
#: scripts/results/calibrator_speed.json.
CALIBRATOR_ENV = "TLEDGE_CALIBRATOR"


def resolve_calibrator(chosen: "CalibratorKind | str | None", env: Mapping[str, str] | None = None) -> CalibratorKind:
    """`chosen`, else $TLEDGE_CALIBRATOR, else TensorFlow's; `ExportError` naming the choices otherwise."""
    value = chosen if chosen is not None else (os.environ if env is None else env).get(CALIBRATOR_ENV, "").strip().lower()
    if not value:
        return CalibratorKind.TENSORFLOW
    try:
        return CalibratorKind(value)
    except ValueError:
        choices = ", ".join(kind.value for kind in CalibratorKind)
        raise ExportError(f"Unknown calibrator {value!r} (from --calibrator or ${CALIBRATOR_ENV}); choose one of: {choices}") from None


#: Calibration images used for int8 when the user does not say. TensorFlow's calibrator
#: cost about 80 ms per image on 2 cores whatever the batching; on clothing-small (10 classes,
#: bias correction on) 64 images kept top-1 agreement at 99.1 % (val) / 98.9 % (test) and
#: 32 at 98.8 / 98.7 (scripts/results/calibration_sweep_clothing.json). The guard is
#: tests/export/test_calibration_guard.py.
DEFAULT_CALIBRATION_IMAGES = 64
#: Fewer calibration images than this gives unreliable int8 ranges: warn.
MIN_CALIBRATION_IMAGES = 32
#: Largest accepted drop of accuracy from Keras to .tflite, in percentage points.
DEFAULT_MAX_DROP = 2.0



class ThresholdMode(str, Enum):
    """`tledge export --thresholds`: choose per-class thresholds (auto) or store none."""

    AUTO = "auto"
    NONE = "none"


@dataclass(frozen=True)
class ExportOptions:
    """Everything `trainer.export.export` needs besides the run directory.

    `out` is the bundle folder (default: ``models/<run name>``, relative to the current
    directory). `max_drop` is in percentage points of accuracy (val + test pooled).
    """

    quantization: QuantizationMode = QuantizationMode.FLOAT32
    io_type: IOType = IOType.UINT8
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    out: Path | None = None
    force: bool = False
    max_drop: float = DEFAULT_MAX_DROP
    accept_drop: bool = False
    threads: int | None = None  # interpreter threads for verification; None: runtime default
    seed: int = 0  # calibration sampling
    bias_correction: bool = True  # int8: cancel the mean shift of weight rounding (trainer/export/bias_correction.py)
    data_root: Path | None = None  # where the run's images are now, when they moved; None: as recorded
    target_precision: float | None = 0.95  # per-class decision thresholds (trainer/export/thresholds.py); None: none
    calibrator: CalibratorKind | None = None  # int8 ranges: None = $TLEDGE_CALIBRATOR, else TensorFlow's

    def __post_init__(self) -> None:
        # Coerce plain strings (from JSON or scripts) to the enums once, at the boundary.
        object.__setattr__(self, "quantization", QuantizationMode(self.quantization))
        object.__setattr__(self, "io_type", IOType(self.io_type))
        if self.calibrator is not None:
            object.__setattr__(self, "calibrator", CalibratorKind(self.calibrator))
        for name in ("out", "data_root"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))

    @classmethod
    def for_int8(cls, io_type: IOType | str = IOType.UINT8, **kwargs: object) -> "ExportOptions":
        """Full-integer int8 (the default of ``tledge export --quantize``)."""
        return cls(quantization=QuantizationMode.INT8, io_type=IOType(io_type), **kwargs)  # type: ignore[arg-type]

    @classmethod
    def for_float16(cls, **kwargs: object) -> "ExportOptions":
        return cls(quantization=QuantizationMode.FLOAT16, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def for_dynamic(cls, **kwargs: object) -> "ExportOptions":
        return cls(quantization=QuantizationMode.DYNAMIC, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def for_float32(cls, **kwargs: object) -> "ExportOptions":
        return cls(quantization=QuantizationMode.FLOAT32, **kwargs)  # type: ignore[arg-type]
