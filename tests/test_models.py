"""Model loading: logits heads, files, safe mode, preprocessing, fingerprints, the registry."""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline import cli
from pipeline.engine import models
from pipeline.engine.guided import guided_model
from pipeline.engine.heads import strip_head
from pipeline.engine.model_files import method_problem
from pipeline.engine.models import (
    PREPROCESSING_MODES,
    LoadedModel,
    ModelSpec,
    applications,
    fingerprint,
    load_model,
    preprocess,
)

X = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
RNG = np.random.default_rng(1)
BODY_W = [RNG.normal(size=(6, 5)).astype(np.float32), RNG.normal(size=(5,)).astype(np.float32)]
HEAD_W = [RNG.normal(size=(5, 4)).astype(np.float32), RNG.normal(size=(4,)).astype(np.float32)]


def _classifier(head: str) -> keras.Model:
    """A small MLP whose logits are known; ``head`` says how softmax is attached."""
    inputs = keras.Input((6,))
    h = keras.layers.Dense(5, activation="relu", name="body")(inputs)
    if head == "dense_softmax":
        out = keras.layers.Dense(4, activation="softmax", name="head")(h)
    elif head == "dense_sigmoid":
        out = keras.layers.Dense(4, activation="sigmoid", name="head")(h)
    else:
        out = keras.layers.Dense(4, name="head")(h)
    if head == "activation":
        out = keras.layers.Activation("softmax", name="probs")(out)
    elif head == "softmax_layer":
        out = keras.layers.Softmax(name="probs")(out)
    elif head == "ops_softmax":
        out = keras.ops.softmax(out)
    elif head == "ops_sigmoid":
        out = keras.ops.sigmoid(out)
    model = keras.Model(inputs, out)
    model.get_layer("body").set_weights(BODY_W)
    model.get_layer("head").set_weights(HEAD_W)
    return model


def _reference_logits(x: np.ndarray) -> np.ndarray:
    h = np.maximum(x @ BODY_W[0] + BODY_W[1], 0)
    return h @ HEAD_W[0] + HEAD_W[1]


@pytest.mark.parametrize(
    "head", ["dense_softmax", "activation", "softmax_layer", "ops_softmax", "dense_sigmoid",
             "ops_sigmoid"])  # fmt: skip
def test_strip_head_gives_the_logits_before_a_softmax_or_sigmoid(head):
    model = _classifier(head)
    probabilities = model(X).numpy()
    if "sigmoid" in head:  # one probability per class, from its own logit
        np.testing.assert_allclose(probabilities, 1 / (1 + np.exp(-_reference_logits(X))),
                                   rtol=1e-5)  # fmt: skip
    else:
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    logits_model = strip_head(model)
    expected = _classifier("logits")(X).numpy()
    np.testing.assert_array_equal(logits_model(X).numpy(), expected)
    np.testing.assert_allclose(expected, _reference_logits(X), rtol=1e-5, atol=1e-5)
    # The body is shared, not copied.
    assert logits_model.get_layer("body") is model.get_layer("body")


def test_strip_head_inside_a_nested_model_and_identity_without_one():
    inner = _classifier("softmax_layer")
    outer = keras.Sequential([keras.Input((6,)), inner])
    np.testing.assert_array_equal(strip_head(outer)(X).numpy(), _classifier("logits")(X).numpy())
    plain = _classifier("logits")
    assert strip_head(plain) is plain


# ------------------------------------------------------------------ model files


def _image_classifier(softmax: bool = True, lambda_layer: bool = False) -> keras.Model:
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 3))
    h = inputs
    if lambda_layer:
        h = keras.layers.Lambda(lambda t: t * 0.5)(h)
    h = keras.layers.Conv2D(4, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(3, activation="softmax" if softmax else None, name="head")(h)
    return keras.Model(inputs, out)


def _logits_of(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Logits of _image_classifier computed by hand from its layers (softmax removed)."""
    head = model.get_layer("head")
    features = keras.Model(model.input, head.input)(x).numpy()
    kernel, bias = head.get_weights()
    return features @ kernel + bias


IMAGES = np.random.default_rng(3).uniform(0, 1, size=(2, 8, 8, 3)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_model_file_roundtrip_gives_logits(tmp_path, suffix):
    model = _image_classifier()
    path = str(tmp_path / f"clf{suffix}")
    model.save(path)
    loaded = load_model(ModelSpec(path, preprocessing="unit"))
    assert isinstance(loaded, LoadedModel)
    assert (loaded.input_size, loaded.channels, loaded.num_classes) == ((8, 8), 3, 3)
    assert loaded.preprocessing == "unit"
    np.testing.assert_allclose(
        loaded.model(IMAGES).numpy(), _logits_of(model, IMAGES), rtol=1e-5, atol=1e-6
    )
    assert loaded.model.output.dtype == "float32"


def test_safe_mode_rejects_lambda_unless_disabled(tmp_path):
    model = _image_classifier(lambda_layer=True)
    path = str(tmp_path / "lambda.keras")
    model.save(path)
    with pytest.raises(ValueError, match="model.safe_mode: false"):
        load_model(ModelSpec(path, preprocessing="none"))
    loaded = load_model(ModelSpec(path, preprocessing="none", safe_mode=False))
    np.testing.assert_allclose(
        loaded.model(IMAGES).numpy(), _logits_of(model, IMAGES), rtol=1e-5, atol=1e-6
    )
    # A trusted Lambda model still goes through the guided rewrite.
    guided, report = guided_model(loaded.model)
    np.testing.assert_array_equal(guided(IMAGES).numpy(), loaded.model(IMAGES).numpy())
    assert len(report.patched) == 1


def test_fingerprint_is_stable_across_loads_and_changes_with_weights(tmp_path):
    model = _image_classifier()
    path = str(tmp_path / "clf.keras")
    model.save(path)
    spec = ModelSpec(path, preprocessing="unit")
    first, second = load_model(spec), load_model(spec)
    assert first.fingerprint == second.fingerprint
    assert len(first.fingerprint) == 64 and int(first.fingerprint, 16) >= 0
    kernel, bias = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([kernel, bias + np.float32(1e-3)])
    model.save(path)
    assert load_model(spec).fingerprint != first.fingerprint


def test_fingerprint_ignores_auto_generated_names():
    # Two builds of one architecture get different auto names ("conv2d_3" vs "conv2d_4").
    a, b = _image_classifier(softmax=False), _image_classifier(softmax=False)
    assert [layer.name for layer in a.layers] != [layer.name for layer in b.layers]
    assert fingerprint(a) == fingerprint(b)  # same seed, same weights


def test_savedmodel_directory_and_remote_copy(tmp_path):
    model = _image_classifier(softmax=False)
    export_dir = str(tmp_path / "exported")
    model.export(export_dir, verbose=False)
    remote = "ram://bucket/exported"  # a tf.io.gfile filesystem, standing in for gs://
    for directory, _, files in tf.io.gfile.walk(export_dir):
        relative = os.path.relpath(directory, export_dir)
        tf.io.gfile.makedirs(f"{remote}/{relative}")
        for name in files:
            tf.io.gfile.copy(os.path.join(directory, name), f"{remote}/{relative}/{name}", True)
    local = load_model(ModelSpec(export_dir, preprocessing="symmetric"))
    copied = load_model(ModelSpec(remote, preprocessing="symmetric"))
    expected = model(IMAGES).numpy()
    np.testing.assert_allclose(local.model(IMAGES).numpy(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(copied.model(IMAGES).numpy(), expected, rtol=1e-6, atol=1e-6)
    assert local.fingerprint == copied.fingerprint
    assert (local.input_size, local.channels, local.num_classes) == ((8, 8), 3, 3)
    with pytest.raises(ValueError, match="SavedModel"):
        guided_model(local.model)


def test_a_savedmodel_with_guided_is_one_line_and_exit_2_before_loading(tmp_path, capsys):
    export_dir = str(tmp_path / "exported")
    _image_classifier(softmax=False).export(export_dir, verbose=False)
    assert method_problem(export_dir, ["vanilla", "smoothgrad"]) is None
    problem = method_problem(export_dir, ["vanilla", "guided", "guided_smoothgrad"])
    assert "['guided', 'guided_smoothgrad']" in problem and "SavedModel" in problem
    assert method_problem(str(tmp_path / "m.keras"), ["guided"]) is None  # not a SavedModel
    out = tmp_path / "out"
    code = cli.main(["run", "--set", f"model.name={export_dir}", "--set",
                     "saliency.methods=[guided]", "--set", f"output.dir={out}", "-q"])  # fmt: skip
    assert code == cli.EXIT_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.save('m.keras')" in err[0]
    assert not out.exists()


def test_remote_model_file_is_copied_first(tmp_path):
    model = _image_classifier()
    path = str(tmp_path / "clf.keras")
    model.save(path)
    tf.io.gfile.copy(path, "ram://bucket/clf.keras", overwrite=True)
    loaded = load_model(ModelSpec("ram://bucket/clf.keras", preprocessing="unit"))
    np.testing.assert_allclose(
        loaded.model(IMAGES).numpy(), _logits_of(model, IMAGES), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(FileNotFoundError, match="model.name"):
        load_model(ModelSpec("ram://bucket/missing.keras", preprocessing="unit"))


def test_input_size_comes_from_the_model_or_the_spec(tmp_path):
    inputs = keras.Input((None, None, 1))
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs))
    path = str(tmp_path / "any_size.keras")
    keras.Model(inputs, out).save(path)
    with pytest.raises(ValueError, match="model.input_size"):
        load_model(ModelSpec(path, preprocessing="unit"))
    loaded = load_model(ModelSpec(path, preprocessing="unit", input_size=(12, 10)))
    assert (loaded.input_size, loaded.channels) == ((12, 10), 1)
    with pytest.raises(ValueError, match="needs 3-channel"):
        load_model(ModelSpec(path, preprocessing="caffe", input_size=(12, 10)))
    fixed = str(tmp_path / "fixed.keras")
    _image_classifier().save(fixed)
    with pytest.raises(ValueError, match=r"model.input_size=\[9, 9\] differs"):
        load_model(ModelSpec(fixed, preprocessing="unit", input_size=(9, 9)))


# ------------------------------------------------------------------ preprocessing

PIXEL = np.array([[[[255.0, 128.0, 0.0]]]], np.float32)
EXPECTED = {
    "none": [255.0, 128.0, 0.0],
    "unit": [1.0, 128 / 255, 0.0],
    "symmetric": [1.0, 128 / 127.5 - 1, -1.0],
    "caffe": [0.0 - 103.939, 128.0 - 116.779, 255.0 - 123.68],  # BGR order
    "torch": [(1 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (0 - 0.406) / 0.225],
}


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_preprocessing_modes_on_a_known_pixel(mode):
    out = preprocess(PIXEL, mode).numpy()[0, 0, 0]
    np.testing.assert_allclose(out, EXPECTED[mode], rtol=1e-6, atol=1e-5)
    loaded = LoadedModel(keras.Sequential(), "m", (1, 1), 3, mode, "0" * 64, 2)
    np.testing.assert_array_equal(loaded.preprocess(PIXEL).numpy()[0, 0, 0], out)


def test_auto_is_not_a_concrete_mode():
    with pytest.raises(ValueError, match="'auto' must be resolved"):
        preprocess(PIXEL, "auto")


FAMILY_MODES = {
    "convnext": "none",
    "densenet": "torch",
    "efficientnet": "none",
    "efficientnet_v2": "none",
    "inception_resnet_v2": "symmetric",
    "inception_v3": "symmetric",
    "mobilenet": "symmetric",
    "mobilenet_v2": "symmetric",
    "mobilenet_v3": "none",
    "nasnet": "symmetric",
    "resnet": "caffe",
    "resnet_v2": "symmetric",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "xception": "symmetric",
}


def test_every_family_mode_equals_its_own_preprocess_input():
    pixels = np.random.default_rng(4).uniform(0, 255, size=(2, 3, 3, 3)).astype(np.float32)
    families = {app.family: app for app in applications().values()}
    assert set(families) == set(FAMILY_MODES)
    for family, app in families.items():
        assert app.preprocessing == FAMILY_MODES[family], family
        theirs = np.asarray(app.preprocess_input(pixels.copy()))
        ours = preprocess(pixels, app.preprocessing).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-5, err_msg=family)


# ------------------------------------------------------------------ registry

SIZES = {  # every non-224 default, and a few 224 ones
    "ResNet50": 224,
    "VGG19": 224,
    "InceptionV3": 299,
    "InceptionResNetV2": 299,
    "Xception": 299,
    "NASNetMobile": 224,
    "NASNetLarge": 331,
    "EfficientNetB0": 224,
    "EfficientNetB1": 240,
    "EfficientNetB2": 260,
    "EfficientNetB3": 300,
    "EfficientNetB4": 380,
    "EfficientNetB5": 456,
    "EfficientNetB6": 528,
    "EfficientNetB7": 600,
    "EfficientNetV2B0": 224,
    "EfficientNetV2B1": 240,
    "EfficientNetV2B2": 260,
    "EfficientNetV2B3": 300,
    "EfficientNetV2S": 384,
    "EfficientNetV2M": 480,
    "EfficientNetV2L": 480,
    "ConvNeXtXLarge": 224,
    "MobileNetV3Large": 224,
}


def test_registry_covers_every_keras_application():
    shipped = {
        name
        for name in dir(keras.applications)
        if name[:1].isupper() and callable(getattr(keras.applications, name))
    }
    registry = applications()
    assert set(registry) == shipped
    assert len(registry) == 40
    for name, app in registry.items():
        assert app.builder is getattr(keras.applications, name)
        assert callable(app.preprocess_input)
        assert app.preprocessing in PREPROCESSING_MODES[:-1]
        assert app.classifier_activation
        assert app.input_size == SIZES.get(name, 224)
        assert ModelSpec(name).is_application


@pytest.mark.slow  # a keras.applications build
def test_named_application_loads_as_logits_with_local_weights(tmp_path):
    spec = ModelSpec("MobileNetV2", weights=None, input_size=(32, 32))
    loaded = load_model(spec)
    assert (loaded.input_size, loaded.num_classes, loaded.preprocessing) == (
        (32, 32),
        1000,
        "symmetric",
    )
    assert loaded.model.layers[-1].activation is keras.activations.linear
    pixels = np.random.default_rng(5).uniform(0, 255, size=(1, 32, 32, 3)).astype(np.float32)
    logits = loaded.model(loaded.preprocess(pixels)).numpy()
    assert abs(float(np.exp(logits).sum()) - 1.0) > 1e-3  # not probabilities
    weights = str(tmp_path / "mnv2.weights.h5")
    loaded.model.save_weights(weights)
    again = load_model(dataclasses.replace(spec, weights=weights))
    np.testing.assert_array_equal(again.model(loaded.preprocess(pixels)).numpy(), logits)
    assert again.fingerprint == loaded.fingerprint


def test_imagenet_without_network_says_how_to_use_a_local_file(monkeypatch):
    def offline(**kwargs):
        raise Exception(  # what keras.utils.get_file raises offline
            "URL fetch failure on https://storage.googleapis.com/tensorflow/keras-applications/"
            "mobilenet_v2/x.h5: None -- [Errno -3] Temporary failure in name resolution"
        )

    app = applications()["MobileNetV2"]
    monkeypatch.setitem(applications(), "MobileNetV2", dataclasses.replace(app, builder=offline))
    with pytest.raises(RuntimeError) as info:
        load_model(ModelSpec("MobileNetV2"))
    message = str(info.value)
    assert "model.weights" in message and "local weights file" in message
    assert os.path.join(".keras", "models") in message
    assert "keras-applications/releases" in message
    assert "Temporary failure in name resolution" in message


# ------------------------------------------------------------------ spec validation


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "model.name"),
        ({"name": "   "}, "model.name"),
        ({"name": 3}, "model.name"),
        ({"name": "MobileNetv2"}, "model.name"),  # a typo, not a path
        ({"name": "MobileNetV2", "preprocessing": "caffee"}, "model.preprocessing"),
        ({"name": "/models/m.keras"}, "model.preprocessing"),  # auto for a file
        ({"name": "MobileNetV2", "input_size": (224,)}, "model.input_size"),
        ({"name": "MobileNetV2", "input_size": (0, 224)}, "model.input_size"),
        ({"name": "MobileNetV2", "input_size": (224.0, 224)}, "model.input_size"),
        ({"name": "MobileNetV2", "input_size": (True, 224)}, "model.input_size"),
        ({"name": "MobileNetV2", "weights": "imagenet21k"}, "model.weights"),
        ({"name": "MobileNetV2", "weights": 5}, "model.weights"),
        ({"name": "MobileNetV2", "safe_mode": "yes"}, "model.safe_mode"),
    ],
)
def test_model_spec_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")) as info:
        ModelSpec(**kwargs)
    assert repr(kwargs.get(field.split(".")[1], kwargs["name"])) in str(info.value)


def test_model_spec_normalises_and_suggests():
    assert ModelSpec("ResNet50", input_size=[256, 192]).input_size == (256, 192)
    with pytest.raises(ValueError, match=r"Did you mean \['MobileNetV2'"):
        ModelSpec("MobileNetv2")
    with pytest.raises(ValueError, match="one of"):
        ModelSpec("/models/m.keras")
    assert ModelSpec("/models/m.keras", preprocessing="unit").is_application is False
    assert models.ModelSpec("gs://b/m", preprocessing="none").name == "gs://b/m"
