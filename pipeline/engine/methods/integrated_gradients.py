"""Integrated gradients (Sundararajan et al. 2017) from a baseline, midpoint rule.

alpha_s = (s + 0.5) / steps is second-order accurate, so completeness (attributions sum
to score(x) - score(baseline)) holds closely with few steps.
"""

import keras
import tensorflow as tf

from pipeline.engine.methods.gradient import target_gradient
from pipeline.engine.methods.loop import sample_loop, target_logits


def integrated_gradients(
    model: keras.Model,
    x: tf.Tensor,
    targets: tf.Tensor,
    baseline: tf.Tensor,
    *,
    steps: int,
    chunk_limit: int,
    loss_scale: float,
) -> tuple[tf.Tensor, tf.Tensor]:
    """((x - baseline) * mean gradient along the straight path, target logit of x)."""

    def on_path(images: tf.Tensor, rows: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        alpha = (tf.cast(step, tf.float32) + 0.5) / steps  # midpoint rule
        return baseline + alpha[:, None, None, None] * (images - baseline)

    grads, _ = sample_loop(
        model,
        x,
        targets,
        reps=steps,
        chunk_limit=chunk_limit,
        make_inputs=on_path,
        gradient_fn=target_gradient,
        loss_scale=loss_scale,
    )
    return grads / steps * (x - baseline), target_logits(model, x, targets, chunk_limit)
