"""Grad-CAM and guided Grad-CAM against hand-computed maps, the layer they use, and the
models they cannot run on (said before any data is read)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline import cli
from pipeline.audit.pipeline import run_audit
from pipeline.beam.run import run
from pipeline.config.files import load_config
from pipeline.engine.api import explain
from pipeline.engine.explainer import Explainer
from pipeline.engine.methods.gradcam import cam_layer
from pipeline.testing.reliability import base_overrides, noise_png, read_records, write_files

SIZE = 12


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, SIZE, SIZE, 3)).astype(np.float32)


def _gap_cnn() -> keras.Model:
    """conv -> conv ("last_conv", 6x6) -> GAP -> Dense: Grad-CAM is CAM here."""
    keras.utils.set_random_seed(1)
    x = inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(5, 3, strides=2, padding="same", activation="relu",
                            name="last_conv")(x)  # fmt: skip
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def _residual_cnn() -> keras.Model:
    """conv + BatchNorm, a residual add, max pooling, a flattening Dense and a softmax head."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x, training=False)
    x = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    x = keras.layers.Add(name="block_out")([x, y])
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))


def test_gradcam_of_a_gap_network_is_its_class_activation_map():
    """After GAP + Dense, d y_c / d A^k_ij = W[k, c] / (h w) everywhere, so the Grad-CAM
    weights are W[:, c] / (h w) and the map is relu(sum_k W[k, c] A^k) / (h w), upsampled."""
    model = _gap_cnn()
    x = _images(4)
    targets = np.array([0, 2, 1, 2])
    got = Explainer(model).explain(x, "gradcam", targets=targets)
    features = keras.Model(model.inputs[0], model.get_layer("last_conv").output)(x).numpy()
    w = model.get_layer("head").get_weights()[0]  # [k, classes]
    h, wd = features.shape[1:3]
    cam = np.maximum(np.einsum("bhwk,kb->bhw", features, w[:, targets]), 0) / (h * wd)
    expected = tf.image.resize(cam[..., None], (SIZE, SIZE), method="bilinear").numpy()
    assert got.gradients.shape == (4, SIZE, SIZE, 1)
    np.testing.assert_allclose(got.gradients, expected, atol=1e-5, rtol=1e-5)
    logits = model(x).numpy()
    np.testing.assert_allclose(got.scores, logits[np.arange(4), targets], rtol=1e-5)


def test_gradcam_of_a_residual_network_with_a_softmax_head_by_tape():
    model = _residual_cnn()
    explainer = Explainer(model, gradcam_layer="block_out")
    x = _images(3, seed=1)
    targets = np.array([3, 0, 1])
    got = explainer.explain(x, "gradcam", targets=targets)
    logits_model = explainer.logits_model  # the softmax head stripped, as for every map
    block = logits_model.get_layer("block_out").output
    inner = keras.Model(logits_model.inputs[0], [block, logits_model.outputs[0]])

    @tf.function
    def reference(images, chosen):
        with tf.GradientTape() as tape:
            a, logits = inner(images)
            score = tf.reduce_sum(logits * tf.one_hot(chosen, 4))
        weights = tf.reduce_mean(tape.gradient(score, a), axis=[1, 2])  # mean gradient
        return tf.nn.relu(tf.einsum("bhwk,bk->bhw", a, weights))  # then ReLU

    cam = reference(tf.constant(x), tf.constant(targets)).numpy()
    assert cam.shape == (3, SIZE, SIZE)  # no pooling before block_out: no upsampling
    np.testing.assert_allclose(got.gradients[..., 0], cam, atol=1e-5, rtol=1e-5)
    assert got.gradients.max() > 0


def test_guided_gradcam_is_guided_backprop_times_the_upsampled_cam():
    model = _gap_cnn()
    explainer = Explainer(model)
    x = _images(3, seed=2)
    targets = np.array([1, 1, 0])
    guided = explainer.explain(x, "guided", targets=targets).gradients
    cam = explainer.explain(x, "gradcam", targets=targets).gradients
    combined = explainer.explain(x, "guided_gradcam", targets=targets)
    assert combined.method == "guided_gradcam" and combined.gradients.shape == x.shape
    np.testing.assert_allclose(combined.gradients, guided * cam, rtol=1e-6, atol=1e-7)
    # explain() offers both too, and keeps one Explainer per gradcam_layer
    np.testing.assert_allclose(explain(model, x, "gradcam", targets=targets).gradients, cam,
                               rtol=1e-6)  # fmt: skip


def test_the_layer_is_found_named_or_refused():
    assert cam_layer(_gap_cnn()).name == "last_conv"  # the last spatial 4-D output
    assert cam_layer(_residual_cnn()).name.startswith("max_pooling2d")
    with pytest.raises(ValueError, match="no such layer.*last_conv"):
        Explainer(_gap_cnn(), gradcam_layer="nope")
    with pytest.raises(ValueError, match="not a spatial 4-D map"):
        Explainer(_gap_cnn(), gradcam_layer="head")
    inputs = keras.Input((SIZE, SIZE, 3))
    flat = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="no layer with a spatial 4-D output"):
        Explainer(flat).explain(_images(1), "gradcam", targets=[0])


def test_gradcam_on_a_model_without_feature_maps_exits_2_before_reading(tmp_path, capsys):
    inputs = keras.Input((SIZE, SIZE, 3))
    flat = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    flat.save(tmp_path / "flat.keras")
    write_files(str(tmp_path / "in"), {"a.png": noise_png(1)})
    out = tmp_path / "out"
    sets = [*base_overrides(str(tmp_path / "flat.keras"), f"{tmp_path}/in/*", str(out)),
            "saliency.methods=[gradcam]"]  # fmt: skip
    assert cli.main(["run", *[a for s in sets for a in ("--set", s)], "-q"]) == 2
    assert "no layer with a spatial 4-D output" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_a_run_writes_gradcam_records_artifacts_and_audit(tmp_path, tiny_model):
    write_files(str(tmp_path / "in"), {f"{i}.png": noise_png(i) for i in range(4)})
    out = str(tmp_path / "out")
    overrides = [*base_overrides(tiny_model, f"{tmp_path}/in/*", out),
                 "saliency.methods=[gradcam, guided_gradcam]", "output.views=[heatmap, grid]",
                 "audit.enabled=true", "audit.sanity_samples=0"]  # fmt: skip
    summary = run(load_config(None, overrides))
    assert (summary.images_written, summary.images_failed) == (4, 0)
    for record in read_records(out):
        assert record.gradients["gradcam"].shape == (16, 16, 1)
        assert record.gradients["guided_gradcam"].shape == (16, 16, 3)
        assert record.maps["gradcam"]["abs"].max() == pytest.approx(1.0, abs=1e-3)
    audit = run_audit(load_config(None, overrides)).audit
    assert sorted(audit["methods"]) == ["gradcam", "guided_gradcam"]
