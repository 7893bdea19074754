"""Integrated gradients (Sundararajan et al. 2017) from a baseline, midpoint rule.

alpha_s = (s + 0.5) / steps is second-order accurate, so completeness (attributions sum
to score(x) - score(baseline)) holds closely with few steps.
"""

import tensorflow as tf

from pipeline.engine.methods.loop import Path


def integrated_path(baseline: tf.Tensor, *, steps: int) -> Path:
    """(x - baseline) * the mean gradient at ``steps`` points of the straight path."""

    def on_path(images: tf.Tensor, rows: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, None]:
        alpha = (tf.cast(step, tf.float32) + 0.5) / steps  # midpoint rule
        return baseline + alpha[:, None, None, None] * (images - baseline), None

    def from_baseline(images: tf.Tensor) -> tf.Tensor:
        return images - baseline

    return Path(reps=steps, make=on_path, row_weight=from_baseline)
