"""SmoothGrad noise: per-image seeds from content, and N(0, 1) from stateless Philox bits.

Noise for (image i, sample j) is drawn from Philox bits seeded with (seed_i, j) and turned
into N(0, 1) by Box-Muller: it depends only on the image's seed and the sample index, never
on batch neighbours, the chunking, the device or XLA (the raw Philox bits are the same
everywhere; TF's own float conversion is not the same with XLA).
"""

import hashlib
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from pipeline.engine.checks import check_images, check_int


def image_seeds(x: np.ndarray, seed: int) -> np.ndarray:
    """Content-derived per-image noise seeds: blake2b(image float32 bytes, seed), uint64 [B].

    The same image (same float32 values and shape) gets the same seed in any batch and run.
    """
    check_int("seed", seed, 0)
    images = check_images(x)
    salt = int(seed).to_bytes(8, "little", signed=False)
    seeds = np.empty([images.shape[0]], dtype=np.uint64)
    for i, image in enumerate(images):
        digest = hashlib.blake2b(image.tobytes(), digest_size=8, key=salt)
        digest.update(repr(image.shape).encode())
        seeds[i] = np.frombuffer(digest.digest(), dtype="<u8")[0]
    return seeds


def standard_normal(shape: Sequence[int], seed: tf.Tensor) -> tf.Tensor:
    """N(0, 1) noise from Philox bits via Box-Muller, both branches used.

    TF's own float conversion of Philox bits differs between its kernels and XLA; the raw
    uint32 bits do not, so converting them here gives the same noise with or without XLA.
    One uint32 gives two 16-bit uniforms, and each pair of uniforms two independent normals
    (r cos t, r sin t): a quarter of the bits and half the log/sqrt of one 32-bit uniform per
    uniform and one branch per pair (noise went from ~9% to ~4% of a SmoothGrad step on
    CPU). 16 bits cut the tails at 4.86 sigma (std 0.9996), immaterial for input noise on
    8-bit images.
    """
    size = int(np.prod(shape))
    half = (size + 1) // 2
    bits = tf.random.stateless_uniform(
        [half], seed=seed, minval=None, maxval=None, dtype=tf.uint32, alg="philox"
    )
    # Each 16-bit uniform centred in its bin: u in (0, 1), never 0, so log(u) is finite.
    high = tf.cast(tf.bitwise.right_shift(bits, 16), tf.float32)
    low = tf.cast(tf.bitwise.bitwise_and(bits, 0xFFFF), tf.float32)
    radius = tf.sqrt(-2.0 * tf.math.log((high + 0.5) * 2.0**-16))
    angle = (2.0 * np.pi * 2.0**-16) * (low + 0.5)
    normal = tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], axis=0)
    return tf.reshape(normal[:size], shape)


def sample_noise(seeds: tf.Tensor, samples: tf.Tensor, image_shape: Sequence[int]) -> tf.Tensor:
    """Standard normal noise [n, H, W, C]; row r depends only on (seeds[r], samples[r])."""
    pairs = tf.stack([seeds, tf.cast(samples, tf.int64)], axis=1)

    def one(pair: tf.Tensor) -> tf.Tensor:
        return standard_normal(image_shape, pair)

    return tf.map_fn(one, pairs, fn_output_signature=tf.float32)
