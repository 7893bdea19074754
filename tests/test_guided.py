"""Guided backprop: analytic gradients on hand-built models, identical forward passes."""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.engine.guided import GuidedFunction, GuidedReport, guided_model

# Pre-activations z of 8 units and the upstream gradient v that reaches them (mixed signs,
# so relu(dy) matters; z avoids every kink: 0, 1 (threshold), 3 (hard_silu), 6 (relu6)).
Z = np.array([-2.0, -0.5, 0.4, 2.0, 3.2, 4.5, 6.5, 8.0], np.float32)
V = np.array([1.0, 1.5, 1.0, -1.0, 2.0, -0.5, 1.0, 0.7], np.float32)
X = np.array([[0.3, -1.2, 0.8, 2.0]], np.float32)
W = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
B = (Z - X[0] @ W).astype(np.float32)

SELU_SCALE = 1.0507009873554805


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _phi(z):
    return np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _gelu_exact_prime(z):
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
    return cdf + z * _phi(z)


def _gelu_tanh_prime(z):
    c = math.sqrt(2.0 / math.pi)
    u = c * (z + 0.044715 * z**3)
    t = np.tanh(u)
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * z * z)


# f'(z) for every case, written independently of TF.
DERIVATIVES = {
    "relu": lambda z: (z > 0).astype(np.float32),
    "relu_max6": lambda z: ((z > 0) & (z < 6)).astype(np.float32),
    "relu6": lambda z: ((z > 0) & (z < 6)).astype(np.float32),
    "relu_max4": lambda z: ((z > 0) & (z < 4)).astype(np.float32),
    "relu_threshold": lambda z: np.where(z > 1.0, 1.0, 0.1),  # threshold 1, slope 0.1
    "silu": lambda z: _sigmoid(z) * (1 + z * (1 - _sigmoid(z))),
    "hard_silu": lambda z: np.where(z < -3, 0.0, np.where(z > 3, 1.0, (2 * z + 3) / 6)),
    "gelu": _gelu_exact_prime,
    "gelu_tanh": _gelu_tanh_prime,
    "elu": lambda z: np.where(z > 0, 1.0, np.exp(z)),
    "selu": lambda z: np.where(z > 0, SELU_SCALE, SELU_SCALE * 1.6732632423543772 * np.exp(z)),
    "leaky_relu": lambda z: np.where(z > 0, 1.0, 0.3),
    "prelu": lambda z: np.where(z > 0, 1.0, 0.25),
}


def _activation_block(case: str):
    """The model piece under test, applied to the pre-activations of the first Dense."""
    return {
        "relu": lambda z: keras.layers.Activation("relu")(z),
        "relu_max6": lambda z: keras.layers.ReLU(max_value=6.0)(z),
        "relu6": lambda z: keras.layers.Activation(keras.activations.relu6)(z),
        "relu_max4": lambda z: keras.layers.ReLU(max_value=4.0)(z),
        "relu_threshold": lambda z: keras.layers.ReLU(threshold=1.0, negative_slope=0.1)(z),
        "silu": lambda z: keras.layers.Activation("swish")(z),
        "hard_silu": lambda z: keras.layers.Activation("hard_swish")(z),
        "gelu": lambda z: keras.layers.Activation("gelu")(z),
        "gelu_tanh": lambda z: keras.ops.gelu(z),  # a plain op; approximate=True by default
        "elu": lambda z: keras.layers.ELU()(z),
        "selu": lambda z: keras.layers.Activation(keras.activations.selu)(z),
        "leaky_relu": lambda z: keras.layers.LeakyReLU()(z),
        "prelu": lambda z: keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25))(
            z
        ),
    }[case]


def _tiny_model(case: str) -> keras.Model:
    inputs = keras.Input((4,))
    z = keras.layers.Dense(8, name="pre")(inputs)
    a = _activation_block(case)(z)
    out = keras.layers.Dense(1, use_bias=False, name="head")(a)
    model = keras.Model(inputs, out)
    model.get_layer("pre").set_weights([W, B])
    model.get_layer("head").set_weights([V[:, None]])
    return model


def _input_gradient(model: keras.Model, x: np.ndarray) -> np.ndarray:
    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(model(x))
        return tape.gradient(y, x)

    return grad(tf.constant(x)).numpy()


@pytest.mark.parametrize("case", sorted(DERIVATIVES))
def test_guided_gradient_matches_hand_computed_rule(case):
    model = _tiny_model(case)
    guided, report = guided_model(model)
    assert len(report.patched) == 1 and report.unknown == ()
    fprime = DERIVATIVES[case](Z.astype(np.float64))
    expected_guided = W @ (np.maximum(V, 0) * fprime * (Z > 0))
    expected_vanilla = W @ (V * fprime)
    np.testing.assert_allclose(_input_gradient(guided, X)[0], expected_guided, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(_input_gradient(model, X)[0], expected_vanilla, rtol=2e-5, atol=1e-6)
    # The two rules must differ here (v has negative entries at z > 0), or the test is void.
    assert np.abs(expected_guided - expected_vanilla).max() > 0.1
    np.testing.assert_array_equal(guided(X).numpy(), model(X).numpy())


def test_fused_activation_in_dense_and_conv_is_patched():
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(4, activation="gelu", name="dense")(h)
    out = keras.layers.Dense(3, activation="sigmoid", name="head")(h)
    model = keras.Model(inputs, out)
    guided, report = guided_model(model)
    assert report.patched == ("conv", "dense")
    assert isinstance(guided.get_layer("conv").activation, GuidedFunction)
    assert guided.get_layer("dense").activation == GuidedFunction("gelu")
    assert guided.get_layer("head").activation is keras.activations.sigmoid
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 2)).astype(np.float32)
    np.testing.assert_array_equal(guided(x).numpy(), model(x).numpy())


def test_sigmoid_and_tanh_are_left_alone_and_nothing_to_patch_raises():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, activation="tanh")(inputs)
    h = keras.layers.Activation("sigmoid")(h)
    out = keras.layers.Dense(2, activation="softmax")(h)
    with pytest.raises(ValueError, match="no rectifier activation"):
        guided_model(keras.Model(inputs, out))


def test_unknown_custom_activation_warns_and_is_listed():
    def my_act(x):
        return x * keras.ops.sigmoid(x)

    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, activation=my_act, name="custom_dense")(inputs)
    h = keras.layers.Dense(3, activation="relu", name="ok")(h)
    out = keras.layers.Dense(1)(h)
    with pytest.warns(UserWarning, match="custom_dense"):
        guided, report = guided_model(keras.Model(inputs, out))
    assert report == GuidedReport(patched=("ok",), unknown=("custom_dense",))
    assert guided.get_layer("custom_dense").activation is my_act


def test_nested_sequential_and_plain_ops_are_patched():
    block = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(5, name="inner"), keras.layers.ReLU(name="r")],
        name="block",
    )
    inputs = keras.Input((5,))
    h = block(inputs) + 3.0  # a plain keras op handed to clone_function
    h = keras.ops.relu(h)
    out = keras.layers.Dense(2, name="head")(h)
    model = keras.Model(inputs, out)
    guided, report = guided_model(model)
    assert "r" in report.patched and len(report.patched) == 2
    x = np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32)
    np.testing.assert_array_equal(guided(x).numpy(), model(x).numpy())
    # Guided: no negative gradient reaches the input through the relus of a linear head.
    head = guided.get_layer("head")
    head.set_weights([-np.abs(head.get_weights()[0]), head.get_weights()[1]])
    g = _input_gradient(keras.Model(guided.inputs, guided.outputs[0][:, :1]), x)
    np.testing.assert_array_equal(g, np.zeros_like(g))


def test_normalization_state_is_refreshed_in_the_clone():
    inputs = keras.Input((3,))
    h = keras.layers.Normalization(axis=-1, name="norm")(inputs)
    out = keras.layers.Dense(2, activation="relu")(h)
    model = keras.Model(inputs, out)
    norm = model.get_layer("norm")
    norm.set_weights([np.array([1.0, 2.0, 3.0]), np.array([4.0, 0.25, 9.0]), np.array(5)])
    norm.finalize_state()
    guided, _ = guided_model(model)
    x = np.array([[1.0, 2.5, -3.0]], np.float32)
    np.testing.assert_allclose(guided.get_layer("norm")(x).numpy(), [[0.0, 1.0, -2.0]], atol=1e-6)
    np.testing.assert_array_equal(guided(x).numpy(), model(x).numpy())


# ------------------------------------------------------------------ keras.applications

APPS = {
    "MobileNetV2": {},
    "MobileNetV3Small": {},
    "EfficientNetB0": {},
    "ConvNeXtTiny": {},
    "ResNet50": {},
}


def _randomise_statistics(model: keras.Model, rng: np.random.Generator) -> None:
    """Non-trivial BatchNorm / Normalization state, so a forgotten copy shows up."""
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0, 0.1, beta.shape),
                    rng.normal(0, 0.1, mean.shape),
                    rng.uniform(0.5, 2.0, var.shape),
                ]
            )
        elif isinstance(layer, keras.layers.Normalization) and layer.get_weights():
            mean, var, count = layer.get_weights()
            layer.set_weights([rng.normal(0, 1, mean.shape), rng.uniform(0.5, 2, var.shape), count])
            layer.finalize_state()


@pytest.fixture(scope="module")
def applications():
    rng = np.random.default_rng(3)
    built = {}
    for name, kwargs in APPS.items():
        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, name)(
            weights=None, input_shape=(32, 32, 3), include_top=True, classes=10, **kwargs
        )
        _randomise_statistics(model, rng)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no unknown activations in keras' own models
            guided, report = guided_model(model)
        built[name] = (model, guided, report)
    return built


@pytest.mark.slow  # keras.applications builds
@pytest.mark.parametrize("name", sorted(APPS))
def test_application_forward_is_identical(applications, name):
    model, guided, report = applications[name]
    x = np.random.default_rng(4).uniform(0, 255, size=(2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(guided(x).numpy(), model(x).numpy())
    assert report.unknown == ()
    assert len(report.patched) >= 10


@pytest.mark.slow  # keras.applications builds
def test_mobilenet_relu_layers_are_patched(applications):
    _, _, v2 = applications["MobileNetV2"]
    assert {"Conv1_relu", "block_1_expand_relu", "out_relu"} <= set(v2.patched)
    model, guided, v3 = applications["MobileNetV3Small"]
    relu_layers = [layer.name for layer in model.layers if isinstance(layer, keras.layers.ReLU)]
    hard_swish = [
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.Activation)
        and layer.activation is keras.activations.hard_silu
    ]
    assert relu_layers and hard_swish
    assert set(relu_layers) | set(hard_swish) <= set(v3.patched)
    assert not any(isinstance(layer, keras.layers.ReLU) for layer in guided.layers)


@pytest.mark.slow  # keras.applications builds
def test_convnext_gelu_stays_exact(applications):
    _, guided, report = applications["ConvNeXtTiny"]
    gelus = [name for name in report.patched if name.endswith("_gelu")]
    assert len(gelus) == 18
    assert guided.get_layer(gelus[0]).activation == GuidedFunction("gelu")


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_guided_backward_leaves_the_pre_activation_fusable(activation):
    # Grappler fuses Conv2D+BiasAdd+Relu(6) only when the pre-activation has no other
    # consumer. The guided backward must read the rectifier's output (as TF's own ReluGrad
    # does), not capture its input, or the fusion (about 5% of guided's speed) is lost.
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, activation=activation)(inputs)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h))
    guided, report = guided_model(keras.Model(inputs, out))
    assert len(report.patched) == 1

    @tf.function(autograph=False)
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(guided(x))
        return tape.gradient(y, x)

    graph = grad.get_concrete_function(tf.TensorSpec([1, 8, 8, 3], tf.float32)).graph
    op_type = {"relu": "Relu", "relu6": "Relu6"}[activation]
    grads = [op for op in graph.get_operations() if op.type == op_type + "Grad"]
    assert len(grads) == 1
    rectifier = grads[0].inputs[1].op  # "features": must be the forward rectifier's output
    assert rectifier.type == op_type
    assert [c.name for c in rectifier.inputs[0].consumers()] == [rectifier.name]
