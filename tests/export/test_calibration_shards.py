"""trainer.export.calibration_shards: TensorFlow's calibrator on shards of the samples at
once gives the single pass's calibrated model and int8 file, byte for byte.

Real conversions of a tiny MobileNetV2 (alpha 0.35, 48 px, weights=None, raw pixels in)
with random-pixel calibration samples; the workers are real processes.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

SIZE = 48  # pixels


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, -1)(inputs)
    x = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=0.35, include_top=False, weights=None, pooling="avg")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def _samples(count: int, seed: int = 0):
    from trainer.export.convert import representative_images

    return representative_images(np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def float_model(tiny_model) -> bytes:
    """The float model TensorFlow's converter hands its calibrator (what it calibrates)."""
    from tensorflow.lite.python.optimize import calibrator as tf_calibrator

    from trainer.export.convert import convert_detailed
    from trainer.export.options import CalibratorKind, IOType, QuantizationMode

    captured = {}
    original = tf_calibrator.Calibrator

    class Capture(original):
        def __init__(self, content, *args):
            captured["float"] = bytes(content)
            super().__init__(content, *args)

    tf_calibrator.Calibrator = Capture
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TLEDGE_CALIBRATION_SHARDS", "1")  # the single pass: Capture is what the converter calls
            convert_detailed(tiny_model, QuantizationMode.INT8, IOType.UINT8, _samples(16), False, CalibratorKind.TENSORFLOW)
    finally:
        tf_calibrator.Calibrator = original
    return captured["float"]


def _in_shards(content: bytes, samples: list, shards: int) -> tuple[bytes, int]:
    from tensorflow.lite.python.optimize import calibrator as tf_calibrator

    from trainer.export.calibration_shards import _wrapper_path, calibrate_in_shards

    first = tf_calibrator.Calibrator(content)
    return calibrate_in_shards(first.calibrate, content, _wrapper_path(first), samples, shards)


@pytest.mark.parametrize("count, shards", [(37, 2), (37, 4)])
def test_shards_give_the_single_pass_calibrated_model_byte_for_byte(float_model, count, shards):
    from tensorflow.lite.python.optimize import calibrator as tf_calibrator

    samples = _samples(count, seed=count)
    single = bytes(tf_calibrator.Calibrator(float_model).calibrate(samples))
    merged, used = _in_shards(float_model, list(samples()), shards)
    assert used == shards  # 37 samples: shards of 9-19, uneven
    assert merged == single


@pytest.mark.parametrize("io", ["uint8", "int8"])
def test_the_default_int8_file_is_the_single_pass_file(tiny_model, monkeypatch, io):
    """The conversion as `tledge export` runs it (bias correction on), sharded or not."""
    from trainer.export.convert import convert_detailed
    from trainer.export.options import CalibratorKind, IOType, QuantizationMode

    samples = _samples(32, seed=1)
    files = {}
    for shards in ("1", "3"):
        monkeypatch.setenv("TLEDGE_CALIBRATION_SHARDS", shards)
        files[shards] = convert_detailed(tiny_model, QuantizationMode.INT8, IOType(io), samples, True, None)
    assert files["1"].calibrator_shards == 1 and files["3"].calibrator_shards == 3
    assert files["3"].calibrator is CalibratorKind.TENSORFLOW and files["3"].shards_note is None
    assert files["3"].model == files["1"].model


def _calibrated(float_model: bytes, lows: dict[int, float], highs: dict[int, float]) -> bytes:
    """`float_model` with every tensor TensorFlow logs given a range: 0..1, or the given values."""
    from trainer.export.calibration import logged_tensors, with_ranges
    from trainer.export.schema import tflite_schema

    logged = logged_tensors(tflite_schema().ModelT.InitFromPackedBuf(bytearray(float_model), 0))
    return with_ranges(float_model, {i: (lows.get(i, 0.0), highs.get(i, 1.0)) for i in logged})


def _first_range(content: bytes) -> tuple[bytes, bytes]:
    """The raw float32 bytes of the first calibrated tensor's min and max."""
    from trainer.export.calibration_shards import _range_slots

    low_at, high_at = _range_slots(content)[0]
    return content[low_at:low_at + 4], content[high_at:high_at + 4]


def test_the_merge_keeps_the_earlier_of_equal_extremes_like_std_min(float_model):
    """0.0 and -0.0 compare equal; TensorFlow's running min keeps whichever came first, so the
    fold must keep the earlier shard's unless a later one is strictly beyond it."""
    from trainer.export.calibration import logged_tensors
    from trainer.export.calibration_shards import merge_calibrated
    from trainer.export.schema import tflite_schema

    first = logged_tensors(tflite_schema().ModelT.InitFromPackedBuf(bytearray(float_model), 0))[0]
    negative_zero, zero = struct.pack("<f", -0.0), struct.pack("<f", 0.0)
    a = _calibrated(float_model, {first: -0.0}, {first: 2.0})
    b = _calibrated(float_model, {first: 0.0}, {first: 3.0})
    assert _first_range(merge_calibrated([a, b])) == (negative_zero, struct.pack("<f", 3.0))
    assert _first_range(merge_calibrated([b, a])) == (zero, struct.pack("<f", 3.0))
    c = _calibrated(float_model, {first: -1.5}, {first: 0.5})
    assert _first_range(merge_calibrated([b, c])) == (struct.pack("<f", -1.5), struct.pack("<f", 3.0))


def test_models_that_differ_beyond_their_ranges_are_not_merged(float_model):
    from trainer.export.calibration import Unsupported
    from trainer.export.calibration_shards import merge_calibrated

    a = _calibrated(float_model, {}, {})
    changed = bytearray(a)
    changed[len(changed) // 2] ^= 0xFF  # somewhere in the weights
    with pytest.raises(Unsupported, match="beyond their ranges"):
        merge_calibrated([a, bytes(changed)])


def test_samples_a_worker_cannot_take_as_tensorflow_would_are_left_to_the_single_pass(float_model):
    from trainer.export.calibration import Unsupported

    listed = list(_samples(32)())
    with pytest.raises(Unsupported, match="signature or name"):
        _in_shards(float_model, [{"image": s[0]} for s in listed], 2)
    odd = listed[:31] + [[listed[31][0][:, :40]]]
    with pytest.raises(Unsupported, match="differ in shape"):
        _in_shards(float_model, odd, 2)
    with pytest.raises(Unsupported, match="too few to shard"):
        _in_shards(float_model, listed[:15], 2)  # under 8 per shard


@pytest.mark.parametrize("count, reason", [(10, "too few to shard"), (None, "one shard asked for")])
def test_a_fallback_is_the_single_pass_and_says_why(tiny_model, monkeypatch, count, reason):
    from trainer.export.convert import convert_detailed
    from trainer.export.options import IOType, QuantizationMode

    samples = _samples(count or 16, seed=2)
    monkeypatch.setenv("TLEDGE_CALIBRATION_SHARDS", "2" if count else "1")
    converted = convert_detailed(tiny_model, QuantizationMode.INT8, IOType.UINT8, samples, False, None)
    assert converted.calibrator_shards == 1 and reason in converted.shards_note
    assert converted.calibrator_note is None  # no user-facing note: the same ranges, only slower


def test_nan_values_give_the_single_pass_result(tiny_model, monkeypatch):
    """A NaN in one sample (in the second shard): TensorFlow's logger skips NaN values, so the
    shards still fold to the single pass."""
    from trainer.export.convert import convert_detailed
    from trainer.export.options import IOType, QuantizationMode

    images = _samples(32, seed=3)

    def with_nan():
        for index, (sample,) in enumerate(images()):
            if index == 20:
                sample = sample.copy()
                sample[0, 0, 0, 0] = np.nan
            yield [sample]

    files = {}
    for shards in ("1", "2"):
        monkeypatch.setenv("TLEDGE_CALIBRATION_SHARDS", shards)
        files[shards] = convert_detailed(tiny_model, QuantizationMode.INT8, IOType.UINT8, with_nan, False, None)
    assert files["2"].calibrator_shards == 2
    assert files["2"].model == files["1"].model


def test_a_bad_shard_count_in_the_environment_is_a_clear_error():
    from trainer.errors import ExportError
    from trainer.export.calibration_shards import default_shards

    assert default_shards({"TLEDGE_CALIBRATION_SHARDS": "3"}) == 3
    with pytest.raises(ExportError, match="at least 1"):
        default_shards({"TLEDGE_CALIBRATION_SHARDS": "0"})
    with pytest.raises(ExportError, match="whole number"):
        default_shards({"TLEDGE_CALIBRATION_SHARDS": "two"})


def test_a_worker_that_fails_is_reported_for_the_single_pass(float_model, tmp_path):
    """A worker that cannot load TensorFlow's calibration module (here: no such file) exits
    with an error; the caller is told why, and `sharded_calibration` runs the single pass."""
    from tensorflow.lite.python.optimize import calibrator as tf_calibrator

    from trainer.export.calibration import Unsupported
    from trainer.export.calibration_shards import calibrate_in_shards

    listed = list(_samples(16)())
    with pytest.raises(Unsupported, match="a calibration worker failed"):
        calibrate_in_shards(tf_calibrator.Calibrator(float_model).calibrate, float_model, str(tmp_path / "missing.so"), listed, 2)


def test_an_unusable_calibration_image_is_the_exporters_error_not_a_fallback(tiny_model, tmp_path, monkeypatch):
    """The generator's own ExportError (an image that cannot be decoded) goes straight out,
    without a second pass over the images."""
    import cv2

    from trainer.errors import ExportError
    from trainer.export.convert import convert_detailed, representative_dataset
    from trainer.export.options import IOType, QuantizationMode

    paths = []
    for index in range(20):
        path = tmp_path / f"{index}.png"
        cv2.imwrite(str(path), np.full((SIZE, SIZE, 3), index * 10, np.uint8))
        paths.append(str(path))
    (tmp_path / "19.png").write_bytes(b"not an image")
    generate = representative_dataset(paths, (SIZE, SIZE), "stretch")
    passes = []

    def counted():
        passes.append(1)
        return generate()

    monkeypatch.setenv("TLEDGE_CALIBRATION_SHARDS", "2")
    with pytest.raises(ExportError, match="Calibration image unusable"):
        convert_detailed(tiny_model, QuantizationMode.INT8, IOType.UINT8, counted, False, None)
    assert len(passes) == 1
