"""Vanilla gradient (Simonyan et al. 2013): d logit[target] / d input, per image.

Guided backprop is the same function on the guided-patched model (engine.guided).
"""

import keras
import tensorflow as tf

from pipeline.engine.methods.loop import Path


def target_gradient(
    model: keras.Model,
    inputs: tf.Tensor,
    targets: tf.Tensor,
    weight: tf.Tensor,
    loss_scale: float,
) -> tuple[tf.Tensor, tf.Tensor]:
    """d logit[target] / d inputs per row (rows are independent), and the target logits.

    ``loss_scale`` multiplies the summed score before the gradient and divides the gradient
    after (float16: small gradients stay in range).
    """
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(inputs)
        logits = tf.cast(model(inputs, training=False), tf.float32)
        scores = tf.gather(logits, targets, axis=1, batch_dims=1)
        loss = tf.reduce_sum(scores * weight)
        if loss_scale != 1.0:
            loss = loss * loss_scale
    gradients = tape.gradient(loss, inputs)
    if loss_scale != 1.0:
        gradients = gradients / loss_scale
    return gradients, scores


def _same_inputs(images: tf.Tensor, rows: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, None]:
    return images, None


def gradient_path() -> Path:
    """The plain gradient: one model input per image, the image itself."""
    return Path(reps=1, make=_same_inputs)
