"""Grad-CAM (Selvaraju et al. 2017): the feature maps A^k of a convolutional layer, weighted
by the spatial mean of d(target logit)/dA^k, summed over channels, ReLU'd and upsampled
(bilinear) to the input size, so every map the audit reads is [H, W]:

    cam = relu(sum_k mean_ij(d y_c / d A^k_ij) * A^k),  resized to H x W.

The layer is named, or found: the last layer whose output is spatial and 4-D ([B, h, w, c]
with h * w > 1), which for a CNN is its last convolutional block. Guided Grad-CAM (the
paper's high-resolution variant) is the guided-backprop gradient times the upsampled CAM;
the Explainer combines the two.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

__all__ = ["CompiledCam", "cam_layer", "feature_model", "gradcam", "spatial"]


def spatial(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, keras.layers.InputLayer):  # the image itself: no feature maps
        return False
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):  # a layer used twice, or never called
        return False
    return (
        len(shape) == 4
        and shape[1] is not None
        and shape[2] is not None
        and (shape[1] * shape[2] > 1)
    )


def cam_layer(model: keras.Model, name: str = "") -> keras.layers.Layer:
    """The layer whose feature maps Grad-CAM weights: ``name``, or the last spatial 4-D
    one. ValueError naming the layers there are, and the fix, when there is none."""
    if name:
        try:
            layer = model.get_layer(name)
        except ValueError as error:
            names = [layer.name for layer in model.layers if spatial(layer)]
            raise ValueError(
                f"saliency.gradcam_layer {name!r}: no such layer in model {model.name!r}; "
                f"its spatial 4-D layers are {names[-8:]}."
            ) from error
        if not spatial(layer):
            raise ValueError(
                f"saliency.gradcam_layer {name!r}: its output {tuple(layer.output.shape)} is "
                "not a spatial 4-D map [B, h, w, c]; name a convolutional layer."
            )
        return layer
    for layer in reversed(model.layers):
        if spatial(layer):
            return layer
    raise ValueError(
        f"model {model.name!r} has no layer with a spatial 4-D output [B, h, w, c], so "
        "Grad-CAM has no feature maps to weight. Fix: use vanilla / guided / smoothgrad, or "
        "a convolutional model."
    )


def feature_model(model: keras.Model, name: str = "") -> keras.Model:
    """``model`` with two outputs: the CAM layer's feature maps and the logits."""
    layer = cam_layer(model, name)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, [layer.output, model.outputs[0]])


def gradcam(features: keras.Model, x: tf.Tensor, targets: tf.Tensor) -> tuple:
    """(cam [B, H, W, 1] float32 in the input's size, target logits [B]) for a
    ``feature_model``; call it inside a tf.function."""
    with tf.GradientTape() as tape:
        raw, logits = features(x, training=False)
        scores = tf.gather(tf.cast(logits, tf.float32), targets, axis=1, batch_dims=1)
    grads = tf.cast(tape.gradient(scores, raw), tf.float32)  # [B, h, w, c]
    maps = tf.cast(raw, tf.float32)
    weights = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)  # [B, 1, 1, c]
    cam = tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1, keepdims=True))  # [B, h, w, 1]
    cam = tf.image.resize(cam, tf.shape(x)[1:3], method="bilinear")
    return cam, scores


class CompiledCam:
    """Grad-CAM of one logits model: one tf.function per input shape, each traced once."""

    def __init__(self, model: keras.Model, layer: str = "") -> None:
        self._features = feature_model(model, layer)
        self._functions: dict[tuple, Callable] = {}
        self.traces = 0

    def __call__(self, x: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cam [B, H, W, 1], target logits [B]) as numpy."""
        shape = tuple(x.shape)
        if shape not in self._functions:

            def run(images: tf.Tensor, chosen: tf.Tensor):
                self.traces += 1  # runs only while tracing
                return gradcam(self._features, images, chosen)

            signature = [tf.TensorSpec(shape, tf.float32), tf.TensorSpec(shape[:1], tf.int32)]
            self._functions[shape] = tf.function(
                run, input_signature=signature, autograph=False, reduce_retracing=False
            )
        cam, scores = self._functions[shape](x, targets.astype(np.int32))
        return cam.numpy(), scores.numpy()
