"""The method table (choices.METHOD_TABLE) and SmoothGrad as a noise tunnel around any
gradient method, checked against gradients taken by hand at the same noisy copies."""

import keras
import numpy as np
import tensorflow as tf

from pipeline import choices
from pipeline.engine.explainer import Explainer
from pipeline.engine.methods.noise import sample_noise
from pipeline.engine.methods.registry import (
    CAM_COMPUTATION,
    PATHS,
    PathOptions,
    method_path,
    run_path,
)

SIZE = 6


def _model() -> keras.Model:
    keras.utils.set_random_seed(4)
    x = inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(3, 3, activation="tanh")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(5).normal(size=(n, SIZE, SIZE, 3)).astype(np.float32)


def _noisy(x: np.ndarray, seeds: np.ndarray, sample: int, noise: float) -> np.ndarray:
    """Copy ``sample`` of each image: x + noise * (max - min) * N(0, 1) seeded (seed, j)."""
    eps = sample_noise(
        tf.constant(seeds.view(np.int64)), tf.fill([len(x)], sample), list(x.shape[1:])
    ).numpy()
    spread = x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3))
    return x + (noise * spread)[:, None, None, None] * eps


def _tape_gradient(model: keras.Model, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    inputs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        score = tf.reduce_sum(tf.gather(model(inputs), targets, axis=1, batch_dims=1))
    return tape.gradient(score, inputs).numpy()


def test_the_table_declares_each_method_once_and_the_engine_has_every_computation():
    names = [spec.name for spec in choices.METHOD_TABLE]
    assert len(names) == len(set(names)) and tuple(names) == choices.METHODS
    assert {s.computation for s in choices.METHOD_TABLE} == {*PATHS, CAM_COMPUTATION}
    assert choices.GUIDED_METHODS == ("guided", "guided_smoothgrad", "guided_gradcam")
    assert choices.CAM_METHODS == ("gradcam", "guided_gradcam")
    smooth = [s.name for s in choices.METHOD_TABLE if s.smooth]
    assert smooth == ["smoothgrad", "guided_smoothgrad"]


def test_smoothgrad_is_the_mean_gradient_over_the_seeded_noisy_copies():
    model, x = _model(), _images(3)
    targets, seeds = np.array([0, 3, 1]), np.array([7, 2**63 + 5, 11], np.uint64)
    got = Explainer(model, samples=5, noise=0.3, batch_size=4).explain(
        x, "smoothgrad", targets=targets, seeds=seeds
    )
    expected = np.mean(
        [_tape_gradient(model, _noisy(x, seeds, j, 0.3), targets) for j in range(5)], axis=0
    )
    np.testing.assert_allclose(got.gradients, expected, rtol=1e-5, atol=1e-6)
    logits = model(x).numpy()[np.arange(3), targets]
    np.testing.assert_allclose(got.scores, logits, rtol=1e-6)  # the clean image's score


def test_the_noise_tunnel_wraps_integrated_gradients_too():
    """SmoothGrad over IG = the mean of IG(noisy copy): the (copy - baseline) factor is
    taken per copy, not from the clean image."""
    model, x = _model(), _images(2)
    targets, seeds = np.array([2, 1]), np.array([3, 9], np.uint64)
    spec = choices.MethodSpec("smooth_ig", "integrated_gradients", smooth=True)
    options = PathOptions(samples=4, noise=0.2, ig_steps=6)
    baseline = tf.zeros([SIZE, SIZE, 3])

    @tf.function(autograph=False)
    def smooth_ig(images: tf.Tensor) -> tf.Tensor:
        path = method_path(spec, images, tf.constant(seeds.view(np.int64)), baseline, options)
        return run_path(model, images, tf.constant(targets, tf.int32), path,
                        chunk_limit=5, loss_scale=1.0)[0]  # fmt: skip

    ig = Explainer(model, ig_steps=6)
    copies = [_noisy(x, seeds, j, 0.2) for j in range(4)]
    expected = np.mean(
        [ig.explain(c, "integrated_gradients", targets=targets).gradients for c in copies], 0
    )
    np.testing.assert_allclose(smooth_ig(tf.constant(x)).numpy(), expected, rtol=1e-4, atol=1e-6)
