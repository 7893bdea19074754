"""SmoothGrad (Smilkov et al. 2017): the mean gradient over N noisy copies of each image.

sigma = noise * (max - min) of the image being explained, in model space (the paper's
noise level); the noise is seeded per image (methods.noise), so a rerun or another batch
gives the same map. Guided SmoothGrad is the same function on the guided-patched model.
"""

import keras
import tensorflow as tf

from pipeline.engine.methods.gradient import target_gradient
from pipeline.engine.methods.loop import sample_loop, target_logits
from pipeline.engine.methods.noise import sample_noise


def smoothgrad(
    model: keras.Model,
    x: tf.Tensor,
    targets: tf.Tensor,
    seeds: tf.Tensor,
    *,
    samples: int,
    noise: float,
    chunk_limit: int,
    loss_scale: float,
) -> tuple[tf.Tensor, tf.Tensor]:
    """(mean gradient over ``samples`` noisy copies, target logit of the clean image)."""
    image_shape = list(x.shape[1:])
    sigma = noise * (tf.reduce_max(x, axis=[1, 2, 3]) - tf.reduce_min(x, axis=[1, 2, 3]))

    def noisy(images: tf.Tensor, rows: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        eps = sample_noise(tf.gather(seeds, rows), step, image_shape)
        return images + tf.gather(sigma, rows)[:, None, None, None] * eps

    grads, _ = sample_loop(
        model,
        x,
        targets,
        reps=samples,
        chunk_limit=chunk_limit,
        make_inputs=noisy,
        gradient_fn=target_gradient,
        loss_scale=loss_scale,
    )
    return grads / samples, target_logits(model, x, targets, chunk_limit)
