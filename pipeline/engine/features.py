"""The model's own mid-level features, for the audit's pattern matching (audit.record.hotspots).

A shortcut detector (a tag, a stamp, a frame) lives in the model's feature maps: the same
mark on changing photo backgrounds gives nearly the same activations there, although its
pixels differ (the semi-transparent mark blends with what is behind it). The layer is the
deepest one whose output is a spatial 4-D map with at least FEATURE_GRID cells per side,
so that one cell is no larger than a hotspot window (1/8 of the image side): e.g. the
14 x 14 stage of MobileNetV2 at 224 (block_13_expand_relu, 576 channels), EfficientNetB0's
block6a_expand_activation, ResNet50's conv4_block6_out, the last 12 x 12 block of a small
CNN at 96. A model
without such a layer has no features here, and the audit compares pixels instead.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from pipeline.engine.methods.gradcam import spatial

FEATURE_GRID = 8


# layers that only pad or crop: their grid no longer spans the image (the layer before does)
RESHAPING = (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)


def feature_layer(model: keras.Model) -> keras.layers.Layer | None:
    """The deepest spatial layer with at least FEATURE_GRID cells per side (not a padding
    or cropping layer), or None."""
    for layer in reversed(model.layers):
        if isinstance(layer, RESHAPING) or not spatial(layer):
            continue
        if min(layer.output.shape[1], layer.output.shape[2]) >= FEATURE_GRID:
            return layer
    return None


class CompiledFeatures:
    """The feature map of one logits model: one tf.function per input shape."""

    def __init__(self, model: keras.Model, *, pad_to: int | None = None) -> None:
        layer = feature_layer(model)
        self.layer = None if layer is None else layer.name
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        self._model = None if layer is None else keras.Model(inputs, layer.output)
        self._functions: dict[tuple, Callable] = {}
        self._pad_to = pad_to

    def __call__(self, x: np.ndarray) -> np.ndarray | None:
        """float32 [B, h, w, C], or None when the model has no such layer. Batches go in
        pieces of ``pad_to`` images, the last one padded (one trace per run)."""
        if self._model is None:
            return None
        step = self._pad_to or max(1, len(x))
        out = []
        for start in range(0, len(x), step):
            piece = x[start : start + step]
            fill = np.repeat(piece[-1:], step - len(piece), axis=0)
            out.append(self._run(np.concatenate([piece, fill]))[: len(piece)])
        return np.concatenate(out) if out else None

    def _run(self, x: np.ndarray) -> np.ndarray:
        shape = tuple(x.shape)
        if shape not in self._functions:
            model = self._model

            def run(images: tf.Tensor) -> tf.Tensor:
                return tf.cast(model(images, training=False), tf.float32)

            self._functions[shape] = tf.function(
                run,
                input_signature=[tf.TensorSpec(shape, tf.float32)],
                autograph=False,
                reduce_retracing=False,
            )
        return self._functions[shape](x).numpy()
