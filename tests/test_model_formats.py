"""Every model format x method x precision x audit stage, on one tiny ReLU6 / swish
classifier saved four ways: a .keras file, a legacy .h5, ``model.export()`` (a SavedModel
returning probabilities) and ``tf.saved_model.save`` with a serving signature returning a
dict. Each cell's outcome is asserted: the maps, equal to the .keras model's where the cell
runs; the one line and exit code 2 where it cannot (before any data is read)."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline import cli
from pipeline.audit.causal.sanity import SAVED_MODEL_SKIP, sanity_panel
from pipeline.config import ModelConfig, SaliencyConfig
from pipeline.config.checks import ConfigError
from pipeline.engine.explainer import Explainer
from pipeline.engine.graph import wraps_saved_model
from pipeline.engine.model_files import method_problem
from pipeline.engine.model_geometry import check_methods, load_once, model_notes
from pipeline.engine.models import ModelSpec, load_model
from pipeline.engine.precision import resolve_precision
from pipeline.testing.processes import ROOT

FORMATS = ("keras", "h5", "export", "signature")
SAVED_MODELS = ("export", "signature")
RUNS_ANYWHERE = ("vanilla", "smoothgrad", "integrated_gradients")
NEEDS_LAYERS = ("guided", "gradcam")
PRECISIONS = ("float32", "mixed_bfloat16")  # "auto" is one of these, per CPU (see below)
SIZE = 24


def _model() -> keras.Model:
    keras.utils.set_random_seed(7)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu6")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="swish")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("formats")
    model = _model()
    paths = {"keras": str(root / "m.keras"), "h5": str(root / "m.h5"),
             "export": str(root / "exported"), "signature": str(root / "signature")}  # fmt: skip
    model.save(paths["keras"])
    model.save(paths["h5"])
    model.export(paths["export"], verbose=False)

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, "pixels")])
    def serve(x):
        return {"scores": model(x)}

    module = tf.Module()
    module.model, module.serve = model, serve
    tf.saved_model.save(module, paths["signature"], signatures={"serving_default": serve})
    return paths


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(3).uniform(0.0, 1.0, (3, SIZE, SIZE, 3)).astype(np.float32)


def _maps(
    path: str, method: str, precision: str, images: np.ndarray
) -> tuple[np.ndarray, Explainer]:
    loaded = load_model(ModelSpec(path, preprocessing="none"))
    explainer = Explainer(loaded.model, precision=precision, samples=8, ig_steps=8, fold=False)
    targets = np.argmax(explainer.logits(images), axis=1)
    return explainer.explain(images, method, targets=targets).gradients, explainer


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_loads_as_the_same_logits_model(saved, images, fmt):
    reference = load_model(ModelSpec(saved["keras"], preprocessing="none")).model(images)
    loaded = load_model(ModelSpec(saved[fmt], preprocessing="none"))
    np.testing.assert_allclose(loaded.model(images), reference, rtol=1e-5, atol=1e-5)
    assert wraps_saved_model(loaded.model) == (fmt in SAVED_MODELS)
    assert loaded.notes == ()  # the softmax inside the SavedModels is cut off: logits


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("method", RUNS_ANYWHERE)
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_gradient_methods_run_on_every_format_and_precision(saved, images, fmt, method,
                                                                precision):  # fmt: skip
    reference, _ = _maps(saved["keras"], method, "float32", images)
    got, explainer = _maps(saved[fmt], method, precision, images)
    reduced = resolve_precision(precision) != "float32"
    if fmt in SAVED_MODELS:  # one graph with fixed dtypes: float32, and the reason said
        assert explainer.precision == "float32"
        assert (explainer.precision_note is not None) == reduced
        if reduced:
            assert "runs as float32" in explainer.precision_note
        assert _rel(got, reference) < 1e-4, (fmt, method, precision)
    elif reduced:  # a Keras model is cast: close to float32 (bfloat16: ~3 digits), not equal
        assert explainer.precision == resolve_precision(precision)
        cosine = np.sum(got * reference) / (np.linalg.norm(got) * np.linalg.norm(reference))
        assert cosine > 0.98, (fmt, method, precision, cosine)
    else:
        assert _rel(got, reference) < 1e-5, (fmt, method, precision)


@pytest.mark.parametrize("method", NEEDS_LAYERS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_layer_methods_run_on_keras_files_and_are_refused_on_savedmodels(
    saved, images, fmt, method
):
    model = ModelConfig(name=saved[fmt], preprocessing="none")
    saliency = SaliencyConfig(methods=(method,))
    if fmt in SAVED_MODELS:
        with pytest.raises(ConfigError, match=r"TensorFlow SavedModel .* Fix: load the Keras"):
            check_methods(model, saliency)
        if method == "guided":  # a local SavedModel: refused from the path, before loading
            assert "TensorFlow SavedModel" in method_problem(saved[fmt], [method])
        return
    check_methods(model, saliency)
    reference, _ = _maps(saved["keras"], method, "float32", images)
    got, _ = _maps(saved[fmt], method, "float32", images)
    assert _rel(got, reference) < 1e-5 and np.abs(got).max() > 0


def test_a_refused_cell_is_one_line_and_exit_2_before_any_data(saved, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["run", "--config", str(ROOT / "configs/local.yaml"),
                     "--set", f"model.name={saved['signature']}", "--set", "model.class_names=[]",
                     "--set", "saliency.methods=[vanilla,gradcam]", "--set", f"output.dir={out}",
                     "-q"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_CONFIG and not out.exists()
    assert len(err) == 1 and "['gradcam']" in err[0] and "SavedModel" in err[0], err


@dataclasses.dataclass(frozen=True)
class _Sampled:  # what the sanity check reads of a record
    image: np.ndarray
    target_class: int
    methods: tuple[str, ...] = ("vanilla", "smoothgrad")


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_audit_sanity_check_runs_on_keras_files_and_says_why_not_on_savedmodels(saved, fmt):
    pixels = np.random.default_rng(5).uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.uint8)
    sample = [_Sampled(image=p, target_class=i % 4) for i, p in enumerate(pixels)]
    model = ModelConfig(name=saved[fmt], preprocessing="unit")
    panel = sanity_panel(model, SaliencyConfig(methods=("vanilla", "smoothgrad"), samples=4),
                         sample, layers=2)  # fmt: skip
    assert set(panel) == {"vanilla", "smoothgrad"}
    if fmt in SAVED_MODELS:
        assert all(p == {"skipped": SAVED_MODEL_SKIP, "images": 4} for p in panel.values())
    else:
        assert all(len(p["correlations"]) == 2 and p["images"] == 4 for p in panel.values())


@pytest.mark.parametrize("fmt", SAVED_MODELS)
def test_the_run_summary_says_why_a_savedmodel_runs_float32(saved, fmt):
    model = ModelConfig(name=saved[fmt], preprocessing="none")
    reduced = resolve_precision("auto") != "float32"
    notes = model_notes(model, SaliencyConfig(precision="auto"))
    assert len(notes) == int(reduced)
    assert model_notes(model, SaliencyConfig(precision="float32")) == ()
    assert wraps_saved_model(load_once(model).model)


def test_a_savedmodel_whose_probabilities_come_from_no_softmax_op_is_explained_at_log_p(
    tmp_path, images
):
    model = _model()
    probabilities = keras.Model(model.inputs, model.get_layer("predictions").output)

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
    def serve(x):  # exp / sum: probabilities, but no Softmax op to cut the graph at
        z = tf.math.log(probabilities(x))
        return {"p": tf.exp(z) / tf.reduce_sum(tf.exp(z), axis=1, keepdims=True)}

    module = tf.Module()
    module.model, module.serve = probabilities, serve
    path = str(tmp_path / "probabilities")
    tf.saved_model.save(module, path, signatures={"serving_default": serve})
    loaded = load_model(ModelSpec(path, preprocessing="none"))
    assert len(loaded.notes) == 1 and "log-probabilities" in loaded.notes[0]
    explainer = Explainer(loaded.model, precision="float32")
    np.testing.assert_allclose(explainer.probabilities(images), model(images), atol=1e-5)
