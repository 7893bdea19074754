"""SmoothGrad (Smilkov et al. 2017) as a noise tunnel around any gradient method.

The map is the mean of the inner method's map over ``samples`` noisy copies of each image
(Captum's NoiseTunnel, "smoothgrad"). sigma = noise * (max - min) of the image being
explained, in model space (the paper's noise level); the noise is seeded per image
(methods.noise), so a rerun or another batch gives the same map. The copies are flattened
into the inner path's sample loop (samples x inner reps inputs per image, chunked), not run
one after another. SmoothGrad is the tunnel around the plain gradient; guided SmoothGrad
the same on the guided-patched model.
"""

import tensorflow as tf

from pipeline.engine.methods.loop import Path
from pipeline.engine.methods.noise import sample_noise


def noise_tunnel(
    inner: Path, x: tf.Tensor, seeds: tf.Tensor, *, samples: int, noise: float
) -> Path:
    """``inner`` averaged over ``samples`` noisy copies of each image of ``x``."""
    image_shape = list(x.shape[1:])
    sigma = noise * (tf.reduce_max(x, axis=[1, 2, 3]) - tf.reduce_min(x, axis=[1, 2, 3]))
    reps = inner.reps

    def noisy(images: tf.Tensor, rows: tf.Tensor, step: tf.Tensor):
        eps = sample_noise(tf.gather(seeds, rows), step // reps, image_shape)
        copies = images + tf.gather(sigma, rows)[:, None, None, None] * eps
        inputs, weight = inner.make(copies, rows, step % reps)
        if inner.row_weight is not None:  # it depends on the noisy copy: apply per input
            row = inner.row_weight(copies)
            weight = row if weight is None else weight * row
        return inputs, weight

    return Path(reps=samples * reps, make=noisy)
