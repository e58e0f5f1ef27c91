"""trainer.export.bias_correction: int8 weight rounding emulated exactly, and its mean shift cancelled."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.export.bias_correction import INT8_WEIGHT_LEVELS, bias_corrected, find_conv_norms, output_shift, rounding_error

SIZE = 32  # pixels


@pytest.mark.parametrize("depthwise", [False, True])
def test_rounding_error_is_per_output_channel_symmetric_int8(depthwise):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 5, 1) if depthwise else (3, 3, 5, 7)) * rng.uniform(0.01, 10, size=5 if depthwise else 7)[
        (None, None, slice(None), None) if depthwise else (None, None, None, slice(None))
    ]
    rounded = kernel + rounding_error(kernel, depthwise)
    axis = 2 if depthwise else 3
    others = tuple(i for i in range(4) if i != axis)
    scale = np.abs(kernel).max(axis=others, keepdims=True) / INT8_WEIGHT_LEVELS
    steps = rounded / scale
    assert np.allclose(steps, np.round(steps), atol=1e-6)  # on the int8 grid of its own channel
    assert np.abs(np.round(steps)).max() == INT8_WEIGHT_LEVELS
    assert np.all(np.abs(rounded - kernel) <= scale / 2 + 1e-12)
    assert np.abs(rounded - kernel).max() > 0  # real rounding happened


def test_rounding_error_leaves_an_all_zero_channel_alone():
    kernel = np.zeros((1, 1, 3, 2))
    kernel[..., 0] = [0.5, -0.25, 0.125]
    assert np.array_equal(rounding_error(kernel, False)[..., 1], np.zeros((1, 1, 3)))


def _tiny_model(seed: int = 0):
    """Rescaling + nested functional Conv->BN->ReLU6->DW->BN->ReLU6->Conv->BN, like MobileNetV2."""
    import keras

    keras.utils.set_random_seed(seed)
    inner_in = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inner_in)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.Conv2D(4, 1, use_bias=False, name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn3")(x)
    backbone = keras.Model(inner_in, x, name="backbone")
    inputs = keras.Input((SIZE, SIZE, 3))
    y = backbone(keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(y))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    for layer in backbone.layers:  # non-trivial BatchNorm statistics, as after real training
        if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D"):
            # one large weight per output channel (as BatchNorm folding makes in real
            # MobileNets) widens the int8 step for all the others of that channel
            kernel = layer.get_weights()[0].reshape(-1, layer.get_weights()[0].shape[-1] if type(layer).__name__ == "Conv2D" else 1)
            kernel[0] *= 30
            layer.set_weights([kernel.reshape(layer.get_weights()[0].shape)])
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n), rng.uniform(0.5, 2, n)])
    return model


def _with_rounded_kernels(model):
    """A copy of `model` whose conv kernels are rounded as the converter rounds them."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.get_layer("backbone").layers:
        if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D"):
            kernel = layer.get_weights()[0]
            layer.set_weights([kernel + rounding_error(kernel, type(layer).__name__ == "DepthwiseConv2D")])
    return copy


def _bn_means(model, pixels):
    import keras

    backbone = model.get_layer("backbone")
    probe = keras.Model(backbone.input, [backbone.get_layer(name).output for name in ("bn1", "bn2", "bn3")])
    outputs = probe(model.layers[1](pixels), training=False)
    return [np.asarray(out).mean(axis=(0, 1, 2)) for out in outputs]


def test_finds_every_conv_batchnorm_pair_in_a_nested_mobilenet_v2():
    import keras

    backbone = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=0.35, include_top=False, weights=None)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), backbone])
    convs = [layer for layer in backbone.layers if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D")]
    pairs = find_conv_norms(model)
    assert len(pairs) == len(convs) == 52
    assert all(owner is backbone for owner, _ in pairs)


def test_correction_cancels_the_mean_shift_of_rounded_weights_and_leaves_the_model_alone():
    rng = np.random.default_rng(1)
    # bright images: the scaled input has a non-zero mean, as real photos do
    calibration = rng.integers(120, 256, size=(16, SIZE, SIZE, 3)).astype(np.float32)
    held_out = rng.integers(120, 256, size=(16, SIZE, SIZE, 3)).astype(np.float32)
    model = _tiny_model()
    before = [w.copy() for w in model.get_weights()]
    corrected, count = bias_corrected(model, [calibration[:8], calibration[8:]])
    assert count == 3
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the float reference is untouched
    float_means = _bn_means(model, held_out)
    plain = _bn_means(_with_rounded_kernels(model), held_out)
    fixed = _bn_means(_with_rounded_kernels(corrected), held_out)
    for layer, reference, shifted, repaired in zip(("bn1", "bn2", "bn3"), float_means, plain, fixed):
        error_plain = np.abs(shifted - reference).mean()
        error_fixed = np.abs(repaired - reference).mean()
        assert error_plain > 1e-3, layer  # rounding really moved the means
        assert error_fixed < 0.35 * error_plain, (layer, error_fixed, error_plain)


def test_output_shift_is_the_mean_change_of_a_1x1_conv():
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(1, 1, 6, 4))
    x = rng.uniform(0, 6, size=(500, 6))  # post-ReLU6 inputs: a non-zero mean
    rounded = kernel + rounding_error(kernel, False)
    measured = (x @ rounded[0, 0]).mean(axis=0) - (x @ kernel[0, 0]).mean(axis=0)
    assert np.allclose(output_shift(kernel, False, x.mean(axis=0)), measured)


def test_int8_export_corrects_by_default_and_can_be_switched_off(export_once, trained_run, tmp_path):
    from trainer.export import ExportOptions, check_file, export
    from trainer.export.tflite_inspect import inspect_tflite

    corrected = export_once("int8")
    plain = export(trained_run, ExportOptions.for_int8(out=tmp_path / "plain", accept_drop=True, bias_correction=False))
    assert corrected.report["bias_correction"] is True and plain.report["bias_correction"] is False
    for result in (corrected, plain):  # both full-integer with raw uint8 pixels in
        summary = inspect_tflite(result.model_path.read_bytes())
        check_file(summary, ExportOptions.for_int8())
        assert (summary.inputs[0].scale, summary.inputs[0].zero_point) == (1.0, 0)
    # the correction changed the folded biases, nothing else: same size, different bytes
    assert corrected.model_path.read_bytes() != plain.model_path.read_bytes()
    assert abs(corrected.report["model_size_bytes"] - plain.report["model_size_bytes"]) < 512
    assert export_once("float32").report.get("bias_correction") is False


def test_in_place_correction_converts_like_the_copy_and_puts_the_weights_back():
    """The exporter corrects the model itself for the conversion (no copy): the file is
    the corrected copy's, to the byte of every weight and quantization parameter, and the
    model's weights afterwards are the ones it had, also when the conversion fails."""
    from trainer.export import convert as convert_lib
    from trainer.export.bias_correction import bias_corrected_in_place
    from trainer.export.options import IOType, QuantizationMode
    from trainer.export.schema import tflite_schema

    rng = np.random.default_rng(3)
    pixels = rng.integers(120, 256, size=(12, SIZE, SIZE, 3)).astype(np.uint8)
    model = _tiny_model(4)
    before = [w.copy() for w in model.get_weights()]
    representative = convert_lib.representative_images(pixels)
    in_place = convert_lib.convert(model, QuantizationMode.INT8, IOType.UINT8, representative, bias_correction=True)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    copy, count = bias_corrected(model, convert_lib._batches(representative))
    assert count == 3
    via_copy = convert_lib.convert(copy, QuantizationMode.INT8, IOType.UINT8, representative, bias_correction=False)

    def weights_and_scales(data):
        m = tflite_schema().ModelT.InitFromPackedBuf(bytearray(data), 0)
        graph = m.subgraphs[0]
        return [(tuple(t.shape), None if m.buffers[t.buffer].data is None else bytes(np.asarray(m.buffers[t.buffer].data)),
                 None if t.quantization is None or t.quantization.scale is None else tuple(np.asarray(t.quantization.scale))) for t in graph.tensors]

    assert weights_and_scales(in_place) == weights_and_scales(via_copy)
    with pytest.raises(RuntimeError, match="mid-conversion"):
        with bias_corrected_in_place(model, convert_lib._batches(representative)) as corrected:
            assert (corrected.layers, corrected.means_from) == (3, "keras")  # no backbone file's means given
            assert not all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
            raise RuntimeError("mid-conversion")
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
