"""The library API: explain() and Explainer on any single-output Keras classifier.

Softmax heads in every form are differentiated at their logits; keras.applications models
match a plain GradientTape reference; repeated calls reuse one cached Explainer that does
not keep the model alive and notices changed weights; the BatchNorm fold is kept only when
it keeps the input gradients.
"""

import gc
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.engine import api
from pipeline.engine.api import explain
from pipeline.engine.explainer import Explainer
from pipeline.engine.guided import guided_model
from pipeline.engine.heads import logits_model

SIZE = 64


def _images(n, shape, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def _relative_l2(got, expected):
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


def _tape_gradient(model, x, targets):
    """The independent reference: a plain tf.function GradientTape on ``model``'s output."""

    @tf.function(autograph=False)
    def run(inputs, chosen):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out = tf.cast(model(inputs, training=False), tf.float32)
            scores = tf.gather(out, chosen, axis=1, batch_dims=1)
        return tape.gradient(scores, inputs), scores

    grads, scores = run(tf.constant(x), tf.constant(targets, tf.int32))
    return grads.numpy(), scores.numpy()


def _calibrate_batchnorm(model, x):
    """Moving statistics := the batch statistics of ``x`` (random weights otherwise give
    gradients near 1e-13, DESIGN.md's trap)."""
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in layers:
        layer.momentum = 0.0
    model(x, training=True)
    return model


# --------------------------------------------------------------------------- softmax heads


def _head(kind, seed=3):
    """A small conv classifier ending in each softmax form, and its logits twin."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    if kind == "dense":
        out = keras.layers.Dense(5, activation="softmax")(h)
    elif kind == "conv":
        h = keras.layers.Reshape((1, 1, 4))(h)
        out = keras.layers.Flatten()(keras.layers.Conv2D(5, 1, activation="softmax")(h))
        return keras.Model(inputs, out), None  # the head sits before a Flatten: not stripped
    else:
        logits = keras.layers.Dense(5)(h)
        if kind == "activation":
            out = keras.layers.Activation("softmax")(logits)
        elif kind == "layer":
            out = keras.layers.Softmax()(logits)
        elif kind == "ops":
            out = keras.ops.softmax(logits)
        else:  # sigmoid
            out = keras.layers.Activation("sigmoid")(logits)
    model = keras.Model(inputs, out)
    return model, logits_model(model)[0]


@pytest.mark.parametrize("kind", ["dense", "activation", "layer", "ops"])
def test_every_softmax_form_is_differentiated_at_its_logits(kind):
    model, logits = _head(kind)
    x = _images(4, (8, 8, 3), seed=1)
    result = explain(model, x, "vanilla")
    assert result.softmax_stripped  # reported on the Explanation
    expected, scores = _tape_gradient(logits, x, result.targets)
    assert np.abs(expected).max() > 1e-4
    assert _relative_l2(result.gradients, expected) <= 1e-6
    np.testing.assert_allclose(result.scores, scores, rtol=1e-6)  # logits, not probabilities
    probabilities = np.asarray(model(x))
    assert not np.allclose(result.scores, probabilities.max(axis=1))
    guided = explain(model, x, "guided")
    want, _ = _tape_gradient(guided_model(logits)[0], x, guided.targets)
    assert _relative_l2(guided.gradients, want) <= 1e-6


def test_a_sigmoid_head_is_stripped_and_its_probabilities_are_per_class_sigmoids():
    model, logits = _head("sigmoid")
    x = _images(2, (8, 8, 3), seed=2)
    result = explain(model, x, "vanilla")
    assert result.softmax_stripped is None and result.head == "sigmoid"
    expected, scores = _tape_gradient(logits, x, result.targets)  # at the logits
    assert _relative_l2(result.gradients, expected) <= 1e-6
    np.testing.assert_allclose(result.scores, scores, rtol=1e-6)
    explainer = Explainer(model)
    np.testing.assert_allclose(explainer.probabilities(x), np.asarray(model(x)), rtol=1e-5)
    # A model that outputs logits is softmax unless told it is multi-label.
    assert Explainer(logits).head == "softmax"
    told = Explainer(logits, head="sigmoid")
    np.testing.assert_allclose(told.probabilities(x), np.asarray(model(x)), rtol=1e-5)


def test_the_softmax_is_stripped_once_and_logged(caplog):
    model, _ = _head("dense")
    with caplog.at_level("INFO", logger="pipeline.engine.explainer"):
        explainer = Explainer(model)
    assert "softmax head stripped" in caplog.text and "activation" in explainer.softmax_stripped


# --------------------------------------------------------------------------- applications


def _application(name, classifier_activation, seed=0):
    keras.utils.set_random_seed(seed)
    builder = getattr(keras.applications, name)
    return builder(
        weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=classifier_activation
    )


APPLICATIONS = ["MobileNetV2", "EfficientNetB0", "MobileNetV3Small", "ConvNeXtTiny"]


@pytest.mark.slow
@pytest.mark.parametrize("name", APPLICATIONS)
def test_explain_on_applications_matches_plain_tape_gradients(name):
    softmax = _application(name, "softmax")
    logits = _application(name, None)
    calibration = np.random.default_rng(5).uniform(0, 255, (16, SIZE, SIZE, 3))
    _calibrate_batchnorm(logits, calibration.astype(np.float32))
    softmax.set_weights(logits.get_weights())
    x = np.random.default_rng(6).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    vanilla = explain(softmax, x, "vanilla")
    assert vanilla.softmax_stripped
    # The softmax model equals its logits twin through the same path.
    twin = explain(logits, x, "vanilla", targets=vanilla.targets)
    assert _relative_l2(vanilla.gradients, twin.gradients) <= 1e-6
    expected, _ = _tape_gradient(logits, x, vanilla.targets)
    assert np.abs(expected).max() > 0
    assert _relative_l2(vanilla.gradients, expected) <= 1e-4
    guided = explain(softmax, x, "guided", targets=vanilla.targets)
    want, _ = _tape_gradient(guided_model(logits)[0], x, vanilla.targets)
    assert _relative_l2(guided.gradients, want) <= 1e-4


# --------------------------------------------------------------------------- the cache


def test_repeated_calls_reuse_one_explainer_and_its_traces():
    api.clear_cache()
    model, _ = _head("dense")
    x = _images(3, (8, 8, 3), seed=4)
    first = explain(model, x, "smoothgrad", samples=4)
    info = api.cache_info()
    explainer = api._cache[model][next(iter(api._cache[model]))].explainer
    traces = explainer.trace_count()
    for _ in range(3):
        again = explain(model, x, "smoothgrad", samples=4)
    assert api.cache_info() == info == {"models": 1, "explainers": 1, "loaded_specs": 0}
    assert explainer.trace_count() == traces  # no new trace, no new Explainer
    np.testing.assert_array_equal(again.gradients, first.gradients)
    explain(model, x, "smoothgrad", samples=5)  # other settings: a second Explainer
    assert api.cache_info()["explainers"] == 2


def test_the_cache_does_not_keep_models_alive():
    api.clear_cache()
    model, _ = _head("activation")
    explain(model, _images(2, (8, 8, 3)), "guided")
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
    assert api.cache_info()["models"] == 0


def test_changed_weights_get_a_fresh_explainer():
    api.clear_cache()
    model, logits = _head("dense")
    x = _images(2, (8, 8, 3), seed=7)
    before = explain(model, x, "vanilla", targets=[0, 1])
    weights = model.get_weights()
    model.set_weights([w * 1.5 for w in weights])  # as a training step would change them
    after = explain(model, x, "vanilla", targets=[0, 1])
    expected, _ = _tape_gradient(logits_model(model)[0], x, np.array([0, 1]))
    assert _relative_l2(after.gradients, expected) <= 1e-6
    assert _relative_l2(after.gradients, before.gradients) > 1e-2


# --------------------------------------------------------------------------- the fold


def _bn_classifier(seed=8):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    h = keras.layers.DepthwiseConv2D(3, padding="same")(h)
    h = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(h))
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    return _calibrate_batchnorm(model, _images(32, (12, 12, 3), seed=seed))


def test_the_fold_is_reported_per_variant_and_keeps_gradients():
    model = _bn_classifier()
    explainer = Explainer(model)
    for guided in (False, True):
        report = explainer.fold_report(guided=guided)
        assert report.pairs == 2
        assert report.folded == (report.gradient_error <= 1e-4)
    x = _images(3, (12, 12, 3), seed=9)
    result = explainer.explain(x, "vanilla", targets=[0, 1, 2])
    expected, _ = _tape_gradient(logits_model(model)[0], x, np.array([0, 1, 2]))
    assert _relative_l2(result.gradients, expected) <= 1e-4


def test_a_fold_that_changes_gradients_is_refused(monkeypatch):
    from pipeline.engine import folding

    model = logits_model(_bn_classifier())[0]
    real = folding._folded_weights

    def off_by_a_little(conv, bn):  # a fold 0.1% off: logits close, gradients not
        kernel, bias = real(conv, bn)
        return [kernel * 1.001, bias]

    monkeypatch.setattr(folding, "_folded_weights", off_by_a_little)
    used, report = folding.fold_checked(model)
    assert used is model and not report.folded
    assert report.gradient_error > 1e-4 and "relative L2" in report.reason


def test_a_change_to_a_copied_weight_is_seen_and_shared_weights_stay_live():
    api.clear_cache()
    model, logits = _head("activation")  # no weights copied for the plain path
    x = _images(2, (8, 8, 3), seed=11)
    explain(model, x, "vanilla", targets=[0, 1])
    entry = next(iter(api._cache[model].values()))
    assert entry.explainer.copied_weights() == []  # shares the model's live variables
    explain(model, x, "guided", targets=[0, 1])  # the guided clone copies every weight
    assert len(entry.explainer.copied_weights()) == len(model.weights)
    conv = model.layers[1]
    kernel, bias = conv.get_weights()
    conv.set_weights([kernel * -1.0, bias])  # only the first layer, as a fine-tune might
    after = explain(model, x, "guided", targets=[0, 1])
    want, _ = _tape_gradient(guided_model(logits_model(model)[0])[0], x, np.array([0, 1]))
    assert _relative_l2(after.gradients, want) <= 1e-6
    assert next(iter(api._cache[model].values())) is not entry  # rebuilt
