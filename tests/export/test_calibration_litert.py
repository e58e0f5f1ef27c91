"""trainer.export.calibration: LiteRT measures the int8 ranges TensorFlow's calibrator would,
and TensorFlow's quantizer turns them into the same int8 file.

Real conversions of the suite's trained tiny run (MobileNetV2 alpha 0.35 at 48 px, trained
for a few epochs on synthetic shapes; its residual ADDs run in place in TensorFlow's
interpreter, the case where TensorFlow's logged ranges are not a tensor's own values).
"""

from __future__ import annotations

import numpy as np
import pytest

RANGE_RTOL = 1e-4  # of a tensor's range width: XNNPACK and TFLite's kernels sum in other orders
SCALE_RTOL = 1e-4
OUTPUT_MEAN_STEPS = 3.0  # uint8 output steps, mean over test images and classes


@pytest.fixture(scope="module")
def tiny(trained_run):
    """(Keras model, calibration samples as the exporter makes them, test images (N, H, W, 3) uint8)."""
    import keras

    from edge.images import load_rgb
    from edge.preprocess import resize_rgb
    from trainer.export.convert import representative_images
    from trainer.run_dir import read_run

    run = read_run(trained_run)
    model = keras.models.load_model(run.model_path, compile=False)

    def decoded(items):
        return np.stack([resize_rgb(load_rgb(path), run.image_size, run.resize) for path, _ in items]).astype(np.uint8)

    return model, representative_images(decoded(run.splits["train"][:32])), decoded(run.splits["test"])


@pytest.fixture(scope="module")
def float_file(tiny) -> bytes:
    from trainer.export.convert import convert
    from trainer.export.options import QuantizationMode

    return convert(tiny[0], QuantizationMode.FLOAT32)


def _ranges_in(model_bytes: bytes) -> dict[int, tuple[float, float]]:
    from trainer.export.schema import tflite_schema

    model = tflite_schema().ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    ranges = {}
    for index, tensor in enumerate(model.subgraphs[0].tensors):
        q = tensor.quantization
        if q is not None and q.min is not None and len(q.min):
            assert q.scale is None or len(q.scale) == 0, "a calibrated tensor carries min/max only"
            ranges[index] = (float(q.min[0]), float(q.max[0]))
    return ranges


def test_litert_measures_the_tensors_and_ranges_tensorflows_calibrator_logs(tiny, float_file):
    from tensorflow.lite.python.optimize import calibrator as tf_calibrator

    from trainer.export.calibration import measure_ranges, plan, with_ranges

    _, samples, _ = tiny
    theirs = _ranges_in(tf_calibrator.Calibrator(float_file).calibrate(samples))
    ours = _ranges_in(with_ranges(float_file, measure_ranges(float_file, samples())))
    assert set(ours) == set(theirs) and len(theirs) > 60
    for index, (low, high) in theirs.items():
        tolerance = RANGE_RTOL * (high - low)
        assert abs(ours[index][0] - low) <= tolerance and abs(ours[index][1] - high) <= tolerance, (index, ours[index], (low, high))
    # the model has what makes TensorFlow's ranges more than a tensor's own values
    assert len(plan(float_file).in_place) >= 3


def test_an_in_place_inputs_range_is_wider_than_its_own_values(tiny, float_file):
    """Where an ADD writes over its input, TensorFlow's logged range for that input is
    wider than the input's own values (it is logged again after the ADD): the fold in
    `measure_ranges` is what the first test's equality rests on."""
    from tensorflow.lite.python.optimize import calibrator as tf_calibrator

    from edge.runtime import make_interpreter
    from trainer.export.calibration import plan

    _, samples, _ = tiny
    theirs = _ranges_in(tf_calibrator.Calibrator(float_file).calibrate(samples))
    chosen = plan(float_file)
    interpreter, _ = make_interpreter(chosen.measured_model, threads=1)
    own: dict[int, tuple[float, float]] = {}
    for (sample,) in samples():
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample)
        interpreter.invoke()
        for inp, _ in chosen.in_place:
            values = interpreter.get_tensor(inp)
            low, high = own.get(inp, (np.inf, -np.inf))
            own[inp] = (min(low, float(values.min())), max(high, float(values.max())))
    widened = [inp for inp, _ in chosen.in_place if (theirs[inp][1] - theirs[inp][0]) > (1 + 100 * RANGE_RTOL) * (own[inp][1] - own[inp][0])]
    assert widened, "no in-place input whose logged range exceeds its own values"


def _tensors(model_bytes: bytes) -> list[tuple[str, int, tuple[int, ...], np.ndarray | None, np.ndarray | None]]:
    from trainer.export.schema import tflite_schema

    model = tflite_schema().ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    rows = []
    for tensor in model.subgraphs[0].tensors:
        q = tensor.quantization
        scale = None if q is None or q.scale is None else np.asarray(q.scale, np.float64)
        zero = None if q is None or q.zeroPoint is None else np.asarray(q.zeroPoint, np.int64)
        rows.append((tensor.name.decode(), tensor.type, tuple(tensor.shape), scale, zero))
    return rows


def _run(model_bytes: bytes, images: np.ndarray) -> np.ndarray:
    from edge.runtime import make_interpreter

    interpreter, _ = make_interpreter(model_bytes, threads=1)
    index_in, index_out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    outputs = []
    for image in images:
        interpreter.set_tensor(index_in, image[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(index_out)[0].astype(np.int32))
    return np.stack(outputs)


def test_int8_file_calibrated_by_litert_is_tensorflows(tiny, monkeypatch):
    from trainer.export.convert import convert_detailed
    from trainer.export.options import CALIBRATOR_ENV, CalibratorKind, IOType, QuantizationMode

    model, samples, test_images = tiny
    monkeypatch.setenv(CALIBRATOR_ENV, "litert")  # as a user asks for it
    ours = convert_detailed(model, QuantizationMode.INT8, IOType.UINT8, samples)
    theirs = convert_detailed(model, QuantizationMode.INT8, IOType.UINT8, samples, calibrator=CalibratorKind.TENSORFLOW)
    assert (ours.calibrator, ours.calibrator_note) == (CalibratorKind.LITERT, None)
    assert theirs.calibrator is CalibratorKind.TENSORFLOW

    a, b = _tensors(ours.model), _tensors(theirs.model)
    assert [row[:3] for row in a] == [row[:3] for row in b]  # names, dtypes, shapes
    quantized = 0
    for (name, _, _, scale_a, zero_a), (_, _, _, scale_b, zero_b) in zip(a, b):
        assert (scale_a is None) == (scale_b is None), name
        if scale_a is None or not len(scale_a):
            continue
        quantized += 1
        np.testing.assert_allclose(scale_a, scale_b, rtol=SCALE_RTOL, err_msg=name)
        assert np.abs(zero_a - zero_b).max() <= 1, name
    assert quantized > 100

    # Scales a few 1e-6 apart still move some int32 biases and int8 roundings by one step,
    # and an int8 network carries that to its output: same top-1, a step or two on average
    # (ranges without the in-place fold give about 27 steps and a different top-1 on 1 in 5).
    out_a, out_b = _run(ours.model, test_images), _run(theirs.model, test_images)
    assert _same_top1(out_a, out_b).all()
    assert np.abs(out_a - out_b).mean() <= OUTPUT_MEAN_STEPS


def _same_top1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: the two outputs give the same top-1 answer. An exact tie for the top score
    (uint8 outputs tie; on an AMD EPYC one of the 24 test images tied in one file and not in
    the other) has every tied class as its answer, where argmax would pick the first."""
    top_a, top_b = a == a.max(axis=1, keepdims=True), b == b.max(axis=1, keepdims=True)
    rows = np.arange(len(a))
    return top_a[rows, b.argmax(axis=1)] | top_b[rows, a.argmax(axis=1)]


def test_same_top1_counts_an_exact_tie_as_either_answer():
    a = np.array([[10, 10, 3], [9, 2, 1], [1, 4, 5]], dtype=np.uint8)
    b = np.array([[10, 11, 3], [2, 9, 1], [1, 5, 5]], dtype=np.uint8)
    assert _same_top1(a, b).tolist() == [True, False, True]


def test_samples_litert_cannot_feed_go_to_tensorflows_calibrator(tiny, float_file):
    """TensorFlow's calibrator resizes the input to each sample; LiteRT's path does not,
    so such samples are calibrated by TensorFlow and the record says why."""
    from tensorflow.lite.python.optimize import calibrator as tf_calibrator

    from trainer.export.calibration import litert_calibration
    from trainer.export.options import CalibratorKind

    size = tiny[2].shape[1] - 8
    images = tiny[2][:4, :size, :size].astype(np.float32)

    def smaller():
        for image in images:
            yield [image[None]]

    original = tf_calibrator.Calibrator
    expected = _ranges_in(original(float_file).calibrate(smaller))
    with litert_calibration() as record:
        assert tf_calibrator.Calibrator is not original
        got = _ranges_in(tf_calibrator.Calibrator(float_file).calibrate(smaller))
    assert tf_calibrator.Calibrator is original
    assert record.used is CalibratorKind.TENSORFLOW and "differs from the input" in record.fallback_reason
    assert got == expected


def test_tensorflows_calibrator_is_put_back_after_an_error():
    from tensorflow.lite.python import lite as tf_lite

    from trainer.export.calibration import litert_calibration

    original = tf_lite._calibrator.Calibrator
    with pytest.raises(KeyError):
        with litert_calibration():
            assert tf_lite._calibrator.Calibrator is not original
            raise KeyError("conversion failed")
    assert tf_lite._calibrator.Calibrator is original


def test_calibrator_choice_comes_from_the_option_then_the_environment():
    from trainer.errors import ExportError
    from trainer.export.options import CalibratorKind, resolve_calibrator

    assert resolve_calibrator(None, {}) is CalibratorKind.TENSORFLOW
    assert resolve_calibrator(None, {"TLEDGE_CALIBRATOR": " LiteRT "}) is CalibratorKind.LITERT
    assert resolve_calibrator("tensorflow", {"TLEDGE_CALIBRATOR": "litert"}) is CalibratorKind.TENSORFLOW
    with pytest.raises(ExportError, match="litert, tensorflow"):
        resolve_calibrator(None, {"TLEDGE_CALIBRATOR": "xnnpack"})


def test_report_names_the_calibrator(export_once):
    assert export_once("int8").report["calibrator"] == "tensorflow"  # the default
    assert export_once("float16").report["calibrator"] is None
