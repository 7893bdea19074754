"""Precision: name resolution per device, reduced-precision clones, guided survives casting."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.engine import precision
from pipeline.engine.explainer import Explainer
from pipeline.engine.guided import GuidedFunction, guided_model
from pipeline.engine.precision import (
    PRECISIONS,
    cast_model,
    configure_gpus,
    cpu_supports_bf16,
    resolve_precision,
)


@pytest.mark.parametrize(
    ("gpu", "bf16", "expected"),
    [
        (True, True, "mixed_float16"),
        (True, False, "mixed_float16"),
        (False, True, "mixed_bfloat16"),
        (False, False, "float32"),
    ],
)
def test_auto_resolves_per_device(monkeypatch, gpu, bf16, expected):
    monkeypatch.setattr(precision, "gpu_available", lambda: gpu)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: bf16)
    assert resolve_precision("auto") == expected


def _tiny(conv_layer=None, *, nested=False):
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    if conv_layer is not None:
        block = conv_layer
        if nested:
            block_in = keras.Input((8, 8, 4))
            block = keras.Model(block_in, conv_layer(block_in))
        h = block(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(3)(h))


@pytest.mark.parametrize(
    ("layer", "nested", "expected"),
    [
        (None, False, "mixed_bfloat16"),
        (lambda: keras.layers.DepthwiseConv2D(3, padding="same"), False, "float32"),
        (lambda: keras.layers.SeparableConv2D(4, 3, padding="same"), True, "float32"),
    ],
)
def test_auto_on_a_bf16_cpu_keeps_depthwise_models_in_float32(monkeypatch, layer, nested, expected):
    monkeypatch.setattr(precision, "gpu_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    model = _tiny(None if layer is None else layer(), nested=nested)
    assert resolve_precision("auto", model) == expected
    assert Explainer(model, precision="auto").precision == expected
    monkeypatch.setattr(precision, "gpu_available", lambda: True)  # GPUs: always float16
    assert resolve_precision("auto", model) == "mixed_float16"


@pytest.mark.parametrize("name", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_concrete_names_pass_through(monkeypatch, name):
    monkeypatch.setattr(precision, "gpu_available", lambda: True)
    assert resolve_precision(name) == name


@pytest.mark.parametrize("name", ["fp16", "float16", "", None, "AUTO"])
def test_unknown_name_is_rejected_with_the_allowed_list(name):
    with pytest.raises(ValueError, match="allowed") as info:
        resolve_precision(name)
    assert repr(name) in str(info.value)
    for allowed in PRECISIONS:
        assert allowed in str(info.value)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    with_bf16 = tmp_path / "a"
    with_bf16.write_text("processor : 0\nflags : fpu sse avx512f avx512_bf16 avx2\n")
    with_amx = tmp_path / "b"
    with_amx.write_text("flags\t\t: fpu amx_bf16 amx_tile\n")
    without = tmp_path / "c"
    without.write_text("flags : fpu sse avx512f avx2\n")
    assert cpu_supports_bf16(with_bf16) and cpu_supports_bf16(with_amx)
    assert not cpu_supports_bf16(without)
    assert not cpu_supports_bf16(tmp_path / "missing")


def test_configure_gpus_is_idempotent():
    first = configure_gpus()
    assert configure_gpus() == first
    assert first == [d.name for d in tf.config.list_physical_devices("GPU")]


def _conv_model() -> keras.Model:
    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(max_value=6.0, name="relu6")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(5, activation="swish", name="head")(h)
    return keras.Model(inputs, out)


X = np.random.default_rng(6).uniform(-1, 1, size=(2, 8, 8, 3)).astype(np.float32)


def test_float32_returns_the_model_itself():
    model = _conv_model()
    assert cast_model(model, "float32") is model


@pytest.mark.parametrize(("name", "tolerance"), [("mixed_bfloat16", 5e-2), ("mixed_float16", 5e-3)])
def test_cast_model_is_close_to_float32(name, tolerance):
    model = _conv_model()
    cast = cast_model(model, name)
    compute = name.removeprefix("mixed_")
    assert cast.get_layer("conv").compute_dtype == compute
    assert cast.get_layer("conv").kernel.dtype == "float32"  # variables stay float32
    out = cast(X)
    assert out.dtype == tf.float32
    reference = model(X).numpy()
    assert np.abs(reference).max() > 0.05  # a non-trivial output to compare
    np.testing.assert_allclose(out.numpy(), reference, atol=tolerance, rtol=tolerance)
    # Same weights, not a re-initialisation: the difference is rounding only.
    for original, copy in zip(model.get_weights(), cast.get_weights(), strict=True):
        np.testing.assert_array_equal(original, copy)
    # Casting again keeps a single float32 output layer.
    again = cast_model(cast, name)
    assert [layer.name for layer in again.layers].count("float32_output") == 1


def _input_gradient(model, x):
    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(model(x)[:, 0])
        return tape.gradient(y, x)

    return grad(tf.constant(x)).numpy()


def _dense_relu_model() -> keras.Model:
    inputs = keras.Input((3,))
    h = keras.layers.Dense(4, activation="relu", name="pre")(inputs)
    out = keras.layers.Dense(1, use_bias=False, name="head")(h)
    model = keras.Model(inputs, out)
    w = np.array([[1.0, -1.0, 0.5, 2.0], [0.5, 1.0, -1.0, 1.0], [-1.0, 0.25, 1.0, 0.5]])
    model.get_layer("pre").set_weights([w, np.array([0.5, 0.25, 0.125, -8.0])])
    model.get_layer("head").set_weights([np.array([[1.0], [-2.0], [0.5], [1.0]])])
    return model


@pytest.mark.parametrize("order", ["guided_then_cast", "cast_then_guided"])
@pytest.mark.parametrize("name", ["mixed_bfloat16", "mixed_float16"])
def test_guided_gradient_survives_the_cast(order, name):
    model = _dense_relu_model()
    if order == "guided_then_cast":
        result = cast_model(guided_model(model)[0], name)
    else:
        result, report = guided_model(cast_model(model, name))
        assert report.patched == ("pre",)
    assert isinstance(result.get_layer("pre").activation, GuidedFunction)
    assert result.get_layer("pre").compute_dtype == name.removeprefix("mixed_")
    x = np.array([[1.0, 1.0, 1.0]], np.float32)
    # z = [1.0, 0.5, 0.625, -4.5]; head v = [1, -2, 0.5, 1]; guided passes v>0 and z>0 only:
    # d/dx = W[:, 0] * 1 + W[:, 2] * 0.5 (all exact in bf16 / fp16).
    expected = np.array([1.0 + 0.25, 0.5 - 0.5, -1.0 + 0.5])
    np.testing.assert_array_equal(_input_gradient(result, x)[0], expected)
    vanilla = _input_gradient(cast_model(model, name), x)[0]
    np.testing.assert_array_equal(vanilla, expected + np.array([2.0, -2.0, -0.5]))


def test_sequential_models_cast_and_guide():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)]
    )
    x = np.array([[0.5, -1.0, 2.0]], np.float32)
    cast = cast_model(model, "mixed_bfloat16")
    dense = [layer for layer in cast.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.compute_dtype for layer in dense] == ["bfloat16"] * 2
    assert cast(x).dtype == tf.float32
    np.testing.assert_allclose(cast(x).numpy(), model(x).numpy(), atol=5e-2, rtol=5e-2)
    guided, report = guided_model(model)
    assert len(report.patched) == 1
    np.testing.assert_array_equal(guided(x).numpy(), model(x).numpy())
