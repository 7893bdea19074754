"""Saliency maths on tiny hand-built models: analytic gradients, guided rule, SmoothGrad
invariances (noise seeding, chunking, batching), IG completeness, retracing, precision."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.audit.metrics.correlation import spearman
from pipeline.choices import CAM_METHODS, METHODS
from pipeline.engine.api import explain
from pipeline.engine.explainer import FLOAT16_LOSS_SCALE, Explainer
from pipeline.engine.methods.noise import image_seeds
from pipeline.engine.targets import resolve_targets

# --------------------------------------------------------------------------- models


def _dense_net(shape, layers, *, seed=0, activation="relu", scales=None):
    """Flatten -> Dense(units[0], activation) ... -> Dense(units[-1]) with numpy weights."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input(shape)
    h = keras.layers.Flatten()(inputs)
    weights = []
    size = int(np.prod(shape))
    for i, units in enumerate(layers):
        last = i == len(layers) - 1
        dense = keras.layers.Dense(units, activation=None if last else activation)
        h = dense(h)
        w = rng.normal(size=(size, units)).astype(np.float32) / np.sqrt(size)
        b = rng.normal(size=(units,)).astype(np.float32) * 0.1
        if scales is not None:
            w, b = scales[i](w, b)
        dense.set_weights([w, b])
        weights.append((w, b))
        size = units
    return keras.Model(inputs, h), weights


def _conv_net(shape=(8, 8, 3), classes=4, seed=1):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="tanh")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(classes)(h))


def _resnet_like(seed=2):
    """Conv + BN + relu, one residual block, strided conv, GAP, Dense; BN calibrated."""
    keras.utils.set_random_seed(seed)

    def conv_bn(x, filters, strides=1, relu=True):
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=0.0)(x)
        return keras.layers.ReLU()(x) if relu else x

    inputs = keras.Input((32, 32, 3))
    h = conv_bn(inputs, 8)
    r = conv_bn(conv_bn(h, 8), 8, relu=False)
    h = keras.layers.ReLU()(keras.layers.Add()([h, r]))
    h = conv_bn(h, 16, strides=2)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    # momentum=0: one training-mode forward pass sets the moving statistics to the batch's.
    model(_images(64, (32, 32, 3), seed=99), training=True)
    return model


def _images(n, shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype(np.float32)


# --------------------------------------------------------------------------- vanilla, guided


def test_vanilla_of_a_linear_model_is_the_target_weight_column():
    model, [(w, b)] = _dense_net((4, 4, 2), [5])
    x = _images(3, (4, 4, 2))
    targets = np.array([4, 0, 2])
    result = Explainer(model).explain(x, "vanilla", targets=targets)
    expected = w[:, targets].T.reshape(3, 4, 4, 2)
    np.testing.assert_allclose(result.gradients, expected, atol=1e-6)
    chunked = Explainer(model, batch_size=2)  # 3 images in chunks of 2 model inputs
    np.testing.assert_allclose(
        chunked.explain(x, "vanilla", targets=targets).gradients, expected, atol=1e-6
    )
    np.testing.assert_allclose(chunked.logits(x), x.reshape(3, -1) @ w + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        result.scores, (x.reshape(3, -1) @ w + b)[np.arange(3), targets], rtol=1e-5
    )
    assert result.gradients.dtype == np.float32 and result.targets.dtype == np.int64
    assert result.method == "vanilla" and result.recomputed == 0


def test_vanilla_of_a_relu_net_matches_the_hand_computed_gradient():
    model, [(w1, b1), (w2, b2)] = _dense_net((4, 4, 1), [7, 3])
    x = _images(4, (4, 4, 1), seed=3)
    targets = np.array([0, 1, 2, 1])
    z = x.reshape(4, -1) @ w1 + b1
    expected = ((z > 0) * w2[:, targets].T) @ w1.T  # dlogit/dx = W1 diag(relu'(z)) W2[:, t]
    result = Explainer(model).explain(x, "vanilla", targets=targets)
    np.testing.assert_allclose(result.gradients.reshape(4, -1), expected, atol=1e-6)


def test_guided_follows_the_guided_backprop_rule():
    model, [(w1, b1), (w2, b2), (w3, _)] = _dense_net((4, 4, 1), [8, 6, 3], seed=5)
    x = _images(4, (4, 4, 1), seed=4)
    targets = np.array([0, 1, 2, 0])
    z1 = x.reshape(4, -1) @ w1 + b1
    z2 = np.maximum(z1, 0) @ w2 + b2
    # Guided: backward through each ReLU is relu(dy) * [z > 0].
    g2 = np.maximum(w3[:, targets].T, 0) * (z2 > 0)
    g1 = np.maximum(g2 @ w2.T, 0) * (z1 > 0)
    expected = g1 @ w1.T
    explainer = Explainer(model)
    result = explainer.explain(x, "guided", targets=targets)
    np.testing.assert_allclose(result.gradients.reshape(4, -1), expected, atol=1e-6)
    vanilla = explainer.explain(x, "vanilla", targets=targets)
    np.testing.assert_allclose(result.scores, vanilla.scores, rtol=1e-6)  # same forward
    assert not np.allclose(result.gradients, vanilla.gradients)
    assert explainer.guided_report() is explainer.guided_report()  # built once
    # guided_smoothgrad with no noise is guided
    smooth = Explainer(model, samples=3, noise=0.0).explain(x, "guided_smoothgrad", targets=targets)
    np.testing.assert_allclose(smooth.gradients, result.gradients, atol=1e-6)


# --------------------------------------------------------------------------- SmoothGrad


@pytest.fixture(scope="module")
def conv():
    return _conv_net()


def test_smoothgrad_with_vanishing_noise_is_vanilla():
    model, _ = _dense_net((4, 4, 1), [7, 3])
    x = _images(3, (4, 4, 1), seed=8)
    targets = np.array([2, 0, 1])
    vanilla = Explainer(model).explain(x, "vanilla", targets=targets)
    smooth = Explainer(model, samples=5, noise=1e-6).explain(x, "smoothgrad", targets=targets)
    np.testing.assert_allclose(smooth.gradients, vanilla.gradients, atol=1e-5)
    np.testing.assert_allclose(smooth.scores, vanilla.scores, rtol=1e-6)  # clean scores


def test_smoothgrad_is_the_mean_over_seeded_noisy_copies(conv):
    x = _images(2, (8, 8, 3), seed=2)
    targets = np.array([1, 3])
    explainer = Explainer(conv, samples=4, noise=0.3)
    smooth = explainer.explain(x, "smoothgrad", targets=targets).gradients
    vanilla = explainer.explain(x, "vanilla", targets=targets).gradients
    assert np.abs(smooth - vanilla).max() > 1e-3  # noise changed something
    # An independent estimate with many samples agrees better with a larger one than
    # with vanilla: the mean converges (a crude unbiasedness check).
    many = Explainer(conv, samples=200, noise=0.3, batch_size=400)
    many2 = Explainer(conv, samples=200, noise=0.3, batch_size=400, seed=1)
    a = many.explain(x, "smoothgrad", targets=targets).gradients
    b = many2.explain(x, "smoothgrad", targets=targets).gradients
    assert np.abs(a - b).max() < np.abs(a - vanilla).max()


def test_smoothgrad_chunked_equals_unchunked(conv):
    x = _images(5, (8, 8, 3), seed=6)
    targets = np.array([0, 1, 2, 3, 0])
    chunked = Explainer(conv, samples=7, batch_size=3).explain(x, "smoothgrad", targets=targets)
    whole = Explainer(conv, samples=7, batch_size=1000).explain(x, "smoothgrad", targets=targets)
    scale = np.abs(whole.gradients).max()
    np.testing.assert_allclose(chunked.gradients, whole.gradients, atol=1e-5 * scale)


def test_smoothgrad_noise_depends_only_on_the_image_and_seed(conv):
    x = _images(5, (8, 8, 3), seed=7)
    targets = np.array([3, 2, 1, 0, 3])
    first = Explainer(conv, samples=6).explain(x, "smoothgrad", targets=targets).gradients
    second = Explainer(conv, samples=6).explain(x, "smoothgrad", targets=targets).gradients
    np.testing.assert_array_equal(first, second)  # same seed, new instance
    alone = Explainer(conv, samples=6).explain(x[2:3], "smoothgrad", targets=targets[2:3])
    np.testing.assert_allclose(alone.gradients[0], first[2], atol=1e-6)
    others = np.concatenate([_images(2, (8, 8, 3), seed=70), x[2:3], _images(2, (8, 8, 3), 71)])
    moved = Explainer(conv, samples=6).explain(others, "smoothgrad", targets=[0, 1, 1, 2, 3])
    np.testing.assert_allclose(moved.gradients[2], first[2], atol=1e-6)
    other_seed = Explainer(conv, samples=6, seed=1).explain(x, "smoothgrad", targets=targets)
    assert np.abs(other_seed.gradients - first).max() > 1e-2 * np.abs(first).max()
    # explicit seeds override the content-derived ones
    given = Explainer(conv, samples=6).explain(
        x, "smoothgrad", targets=targets, seeds=image_seeds(x, 0)
    )
    np.testing.assert_array_equal(given.gradients, first)


def test_smoothgrad_noise_sigma_is_noise_times_each_images_range():
    # logit = 0.5 * sum(x**2): the gradient at a noisy copy is the copy itself, so with one
    # sample (gradient - x) is exactly the noise: N(0, sigma_i) per pixel.
    inputs = keras.Input((16, 16, 1))
    h = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(2, use_bias=False)
    model = keras.Model(inputs, dense(keras.layers.Multiply()([h, h])))
    dense.set_weights([np.full((256, 2), 0.5, np.float32)])
    x = _images(4, (16, 16, 1), seed=40) * np.array([1.0, 2.0, 5.0, 0.5])[:, None, None, None]
    x = x.astype(np.float32)
    result = Explainer(model, samples=1, noise=0.1).explain(x, "smoothgrad", targets=[0] * 4)
    eps = (result.gradients - x).reshape(4, -1)
    sigma = 0.1 * (x.reshape(4, -1).max(1) - x.reshape(4, -1).min(1))
    np.testing.assert_allclose(eps.std(axis=1), sigma, rtol=0.15)
    z = (eps / sigma[:, None]).ravel()
    assert abs(z.mean()) < 0.1
    assert abs(np.mean(np.abs(z) < 1.0) - 0.6827) < 0.05  # normal, not uniform


def test_xla_gives_the_same_maps_and_noise(conv):
    x = _images(3, (8, 8, 3), seed=41)
    targets = np.array([0, 1, 2])
    plain = Explainer(conv, samples=5, batch_size=4).explain(x, "smoothgrad", targets=targets)
    xla = Explainer(conv, samples=5, batch_size=4, xla=True)
    compiled = xla.explain(x, "smoothgrad", targets=targets)
    np.testing.assert_allclose(compiled.gradients, plain.gradients, atol=1e-6)
    assert xla.trace_count() == 1


def test_image_seeds_are_content_derived():
    x = _images(3, (4, 4, 1))
    seeds = image_seeds(x, 0)
    assert seeds.dtype == np.uint64 and len(set(seeds.tolist())) == 3
    np.testing.assert_array_equal(image_seeds(x[::-1], 0), seeds[::-1])
    np.testing.assert_array_equal(image_seeds(x.astype(np.float64), 0), seeds)
    assert not np.any(image_seeds(x, 1) == seeds)


# --------------------------------------------------------------------------- IG


def test_integrated_gradients_completeness():
    model, _ = _dense_net((4, 4, 2), [12, 8, 3], activation="tanh", seed=11)
    x = _images(4, (4, 4, 2), seed=12) * 2.0
    baseline = np.full((4, 4, 2), 0.3, np.float32)
    for given, base in (
        ("zeros", np.zeros_like(x)),
        (baseline, np.broadcast_to(baseline, x.shape)),
    ):
        explainer = Explainer(model, ig_steps=16, ig_baseline=given, batch_size=10)
        differences = explainer.logits(x) - explainer.logits(base)
        targets = np.argmax(np.abs(differences), axis=1)  # the largest change per image
        delta = differences[np.arange(4), targets]
        assert np.all(np.abs(delta) > 0.1)  # the check is not trivially met
        result = explainer.explain(x, "integrated_gradients", targets=targets)
        total = result.gradients.reshape(4, -1).sum(axis=1)
        np.testing.assert_allclose(total, delta, rtol=1e-2)
    # A linear model: IG = (x - baseline) * W exactly.
    targets = np.array([0, 1, 2, 0])
    linear, [(w, _)] = _dense_net((4, 4, 2), [3])
    result = Explainer(linear, ig_steps=3).explain(x, "integrated_gradients", targets=targets)
    np.testing.assert_allclose(result.gradients, x * w[:, targets].T.reshape(x.shape), atol=1e-5)


# --------------------------------------------------------------------------- retracing


@pytest.mark.parametrize("method", METHODS)
def test_one_trace_per_method_with_pad_to(method):
    model, _ = _dense_net((6, 6, 1), [5, 3])
    if method in CAM_METHODS:  # Grad-CAM needs feature maps: a conv layer before the head
        keras.utils.set_random_seed(5)
        inputs = keras.Input((6, 6, 1))
        maps = keras.layers.Conv2D(3, 3, padding="same", activation="relu")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(maps)))
    traces = 2 if method == "guided_gradcam" else 1  # guided gradient + CAM
    x = _images(18, (6, 6, 1), seed=13)
    targets = np.arange(18) % 3
    explainer = Explainer(model, samples=3, ig_steps=4, batch_size=5, pad_to=4)
    outputs = []
    for start, stop in ((0, 4), (4, 8), (8, 12), (12, 16), (16, 18)):
        outputs.append(explainer.explain(x[start:stop], method, targets=targets[start:stop]))
    assert explainer.trace_count() == traces
    short = Explainer(model, samples=3, ig_steps=4, batch_size=5)
    unpadded = short.explain(x[16:18], method, targets=targets[16:18])
    assert outputs[-1].gradients.shape == (2, 6, 6, 1)
    np.testing.assert_allclose(outputs[-1].gradients, unpadded.gradients, atol=1e-6)
    np.testing.assert_allclose(outputs[-1].scores, unpadded.scores, atol=1e-6)
    # a batch larger than pad_to goes through in pad_to slices, same trace
    whole = explainer.explain(x[:10], method, targets=targets[:10])
    assert explainer.trace_count() == traces
    np.testing.assert_allclose(
        whole.gradients, np.concatenate([o.gradients for o in outputs])[:10], atol=1e-6
    )


# --------------------------------------------------------------------------- precision


@pytest.fixture(scope="module")
def resnet():
    return _resnet_like()


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_reduced_precision_maps_rank_correlate_with_float32(resnet, precision):
    x = _images(3, (32, 32, 3), seed=21)
    exact_explainer = Explainer(resnet)
    reduced_explainer = Explainer(resnet, precision=precision)
    targets = np.argmax(exact_explainer.logits(x), axis=1)
    np.testing.assert_allclose(reduced_explainer.logits(x), exact_explainer.logits(x), atol=0.1)
    for method in ("vanilla", "guided"):  # guided: the cast of the guided clone
        exact = exact_explainer.explain(x, method, targets=targets)
        assert np.abs(exact.gradients).max() > 1e-3  # BN calibrated: gradients are not ~0
        reduced = reduced_explainer.explain(x, method, targets=targets)
        assert reduced.gradients.dtype == np.float32 and reduced.recomputed == 0
        for i in range(3):
            maps = np.abs(exact.gradients[i]).sum(-1), np.abs(reduced.gradients[i]).sum(-1)
            assert spearman(*maps) >= 0.95
        np.testing.assert_allclose(reduced.scores, exact.scores, atol=0.1)
    assert reduced_explainer.guided_report().patched  # ReLU layers were patched


def test_float16_loss_scaling_keeps_tiny_gradients():
    # Weights exactly representable in float16; true input gradients ~1e-8, below float16's
    # smallest subnormal (6e-8), so without loss scaling they would flush to zero.
    def first(w, b):
        return np.round(w * 256) / 256 / 8, np.zeros_like(b)

    def last(w, b):
        return np.clip(np.round(w * 8), -8, 8) * 2.0**-24, np.zeros_like(b)

    model, _ = _dense_net((4, 4, 1), [8, 3], seed=17, scales=[first, last])
    x = _images(3, (4, 4, 1), seed=18)
    targets = np.array([0, 1, 2])
    exact = Explainer(model).explain(x, "vanilla", targets=targets).gradients
    assert 1e-9 < np.abs(exact).max() < 6e-8
    half = Explainer(model, precision="mixed_float16").explain(x, "vanilla", targets=targets)
    assert half.recomputed == 0  # no fallback to float32: the float16 path did it
    assert np.count_nonzero(half.gradients) > 0.8 * np.count_nonzero(exact)
    np.testing.assert_allclose(half.gradients, exact, atol=2e-2 * np.abs(exact).max())
    assert FLOAT16_LOSS_SCALE * np.abs(exact).max() > 2.0**-14  # scaled into normal range


def test_non_finite_reduced_precision_maps_are_recomputed_in_float32():
    inputs = keras.Input((4, 4, 1))
    h = keras.layers.Dense(4, use_bias=False)(keras.layers.Flatten()(inputs))
    h = keras.layers.Multiply()([h, h])  # 16000**2 overflows float16
    model = keras.Model(inputs, keras.layers.Dense(3, use_bias=False)(h))
    model.layers[2].set_weights([np.ones((16, 4), np.float32)])
    model.layers[-1].set_weights([np.full((4, 3), 0.5, np.float32)])
    rng = np.random.default_rng(19)
    x = rng.uniform(0, 0.1, size=(4, 4, 4, 1)).astype(np.float32)
    x[[1, 3]] = 1000.0
    targets = np.array([0, 1, 2, 0])
    exact = Explainer(model).explain(x, "vanilla", targets=targets)
    half = Explainer(model, precision="mixed_float16").explain(x, "vanilla", targets=targets)
    assert half.recomputed == 2
    np.testing.assert_array_equal(half.recomputed_rows, [False, True, False, True])
    assert np.all(np.isfinite(half.gradients)) and np.all(np.isfinite(half.scores))
    np.testing.assert_allclose(half.gradients[[1, 3]], exact.gradients[[1, 3]], rtol=1e-6)
    np.testing.assert_allclose(half.gradients[[0, 2]], exact.gradients[[0, 2]], rtol=1e-2)


# --------------------------------------------------------------------------- targets


def test_resolve_targets_modes():
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 1.0]], np.float32)
    rows, targets = resolve_targets(logits, "predicted")
    np.testing.assert_array_equal(rows, [0, 1])
    np.testing.assert_array_equal(targets, [1, 0])
    assert rows.dtype == np.int64 and targets.dtype == np.int64
    _, targets = resolve_targets(logits, "label", labels=[2, 1])
    np.testing.assert_array_equal(targets, [2, 1])
    _, targets = resolve_targets(logits, "class", classes=[0, 2])
    np.testing.assert_array_equal(targets, [0, 2])
    _, targets = resolve_targets(logits, "class", classes=1)
    np.testing.assert_array_equal(targets, [1, 1])
    rows, targets = resolve_targets(logits, "top_k", k=2)
    np.testing.assert_array_equal(rows, [0, 0, 1, 1])
    np.testing.assert_array_equal(targets, [1, 0, 0, 2])


def test_resolve_targets_errors():
    logits = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"positions \[0, 2\].*predicted"):
        resolve_targets(logits, "label", labels=[-1, 3, -1])
    with pytest.raises(ValueError, match="allowed values"):
        resolve_targets(logits, "best")
    with pytest.raises(ValueError, match="needs labels"):
        resolve_targets(logits, "label")
    with pytest.raises(ValueError, match=r"one value per image \(3,\)"):
        resolve_targets(logits, "class", classes=[1, 2])
    with pytest.raises(ValueError, match="classes >= 4"):
        resolve_targets(logits, "class", classes=[1, 2, 4])
    with pytest.raises(ValueError, match="only 4 classes"):
        resolve_targets(logits, "top_k", k=5)
    with pytest.raises(ValueError, match="k: got 0"):
        resolve_targets(logits, "top_k", k=0)
    with pytest.raises(ValueError, match=r"\[B, classes\]"):
        resolve_targets(np.zeros(3), "predicted")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"samples": 0}, "samples: got 0"),
        ({"noise": -0.1}, "noise: got -0.1"),
        ({"batch_size": 0}, "batch_size: got 0"),
        ({"ig_steps": 0}, "ig_steps: got 0"),
        ({"pad_to": 0}, "pad_to: got 0"),
        ({"precision": "float8"}, "precision: got 'float8'.*mixed_float16"),
        ({"ig_baseline": "black"}, "ig_baseline: got 'black'"),
    ],
)
def test_options_are_validated_at_construction(options, message):
    model, _ = _dense_net((4, 4, 1), [3])
    with pytest.raises(ValueError, match=message):
        Explainer(model, **options)


def test_explain_arguments_are_validated():
    model, _ = _dense_net((4, 4, 1), [3])
    explainer = Explainer(model)
    x = _images(2, (4, 4, 1))
    with pytest.raises(ValueError, match="method: got 'grad'.*smoothgrad"):
        explainer.explain(x, "grad", targets=[0, 1])
    with pytest.raises(ValueError, match=r"targets: got values in \[0, 3\]"):
        explainer.explain(x, "vanilla", targets=[0, 3])
    with pytest.raises(ValueError, match=r"targets: got shape \(3,\)"):
        explainer.explain(x, "vanilla", targets=[0, 1, 2])
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        explainer.explain(x[0], "vanilla", targets=[0])
    with pytest.raises(TypeError, match="samples"):
        Explainer(model, samples=2.5)
    with pytest.raises(TypeError, match="keras.Model"):
        Explainer("not a model")


# --------------------------------------------------------------------------- explain()


def test_explain_with_a_keras_model_defaults_to_predicted_targets(conv):
    x = _images(3, (8, 8, 3), seed=30)
    result = explain(conv, x, "vanilla")
    logits = Explainer(conv).logits(x)
    np.testing.assert_array_equal(result.targets, np.argmax(logits, axis=1))
    np.testing.assert_allclose(result.scores, logits.max(axis=1), rtol=1e-5)
    fixed = explain(conv, x, "vanilla", targets=[1, 1, 1])
    np.testing.assert_array_equal(fixed.targets, [1, 1, 1])


def test_explain_with_a_model_spec_applies_the_preprocessing(tmp_path, conv):
    from pipeline.engine.models import ModelSpec

    path = str(tmp_path / "tiny.keras")
    conv.save(path)
    pixels = np.random.default_rng(31).uniform(0, 255, size=(3, 8, 8, 3)).astype(np.float32)
    spec = ModelSpec(name=path, weights=None, preprocessing="unit")
    explainer = Explainer(conv, ig_steps=8)
    for method in ("vanilla", "integrated_gradients"):
        # "black" is the preprocessed image of 0 pixels: zeros for "unit"
        result = explain(spec, pixels, method, targets=[0, 1, 2], ig_steps=8, ig_baseline="black")
        expected = explainer.explain(pixels / 255.0, method, targets=[0, 1, 2])
        np.testing.assert_allclose(result.gradients, expected.gradients, atol=1e-6)
        np.testing.assert_allclose(result.scores, expected.scores, rtol=1e-5)
    with pytest.raises(ValueError, match="input size"):
        explain(spec, pixels[:, :4], "vanilla")


# --------------------------------------------------------------------------- engine internals


def _bn_net(seed=5):
    """Conv -> BN -> ReLU6 -> Depthwise(x2) -> BN -> ReLU -> GAP -> Dense, with BatchNorm
    statistics and affine parameters far from the identity."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", use_bias=True)(inputs)
    h = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(h))
    h = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=False)(h)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization(epsilon=1e-2)(h))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]  # gamma, beta, moving mean, moving variance
            layer.set_weights(
                [rng.uniform(0.5, 2, n), rng.normal(size=n), rng.normal(size=n),
                 rng.uniform(0.2, 3, n)]
            )  # fmt: skip
    return model


def test_batchnorm_folding_keeps_logits_and_gradients():
    import tensorflow as tf

    from pipeline.engine.folding import fold_checked

    model = _bn_net()
    folded, report = fold_checked(model)
    assert report.folded and report.pairs == 2 and report.gradient_error <= 1e-4
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert "BatchNormalization" not in kinds and kinds.count("FoldedBatchNormalization") == 2
    x = _images(4, (12, 12, 3), seed=50)
    np.testing.assert_allclose(folded(x), model(x), rtol=1e-5, atol=1e-5)

    @tf.function
    def gradient(inputs, targets):  # the plain reference, on the original (unfolded) model
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            scores = tf.gather(model(inputs, training=False), targets, axis=1, batch_dims=1)
        return tape.gradient(scores, inputs)

    targets = np.array([0, 1, 2, 1])
    expected = gradient(tf.constant(x), tf.constant(targets)).numpy()
    assert np.abs(expected).max() > 1e-3  # not vanishing: the comparison means something
    got = Explainer(model).explain(x, "vanilla", targets=targets).gradients
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_batchnorm_after_an_activation_or_a_shared_conv_is_not_folded():
    from pipeline.engine.folding import fold_checked

    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(2, 1, activation="relu")(inputs)  # BN after relu: not affine
    h = keras.layers.BatchNormalization()(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    assert fold_checked(model)[0] is model
    conv = keras.layers.Conv2D(2, 1)
    a = conv(inputs)
    both = keras.layers.Add()([keras.layers.BatchNormalization()(a), a])  # conv output reused
    shared = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(both)))
    assert fold_checked(shared)[0] is shared


def test_sample_chunks_are_balanced():
    from pipeline.engine.methods.loop import balanced_chunks as _balanced_chunks

    assert _balanced_chunks(400, 64) == (7, 58)  # not 7 x 64 = 448 inputs
    assert _balanced_chunks(400, 32) == (13, 31)
    assert _balanced_chunks(400, 400) == (1, 400)
    assert _balanced_chunks(5, 1000) == (1, 5)
    assert _balanced_chunks(7, 3) == (3, 3)
