"""Pixels 0..255 -> a model's input space, by named mode (see choices.PREPROCESSING_MODES)."""

from typing import Any

import tensorflow as tf

from pipeline.choices import PREPROCESSING_MODES

_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def preprocess(pixels: Any, mode: str) -> tf.Tensor:
    """Map float pixels 0..255 ``[..., H, W, C]`` (RGB) into a model's input space."""
    if mode not in PREPROCESSING_MODES or mode == "auto":
        raise ValueError(
            f"preprocessing={mode!r} cannot be applied; allowed: "
            f"{[m for m in PREPROCESSING_MODES if m != 'auto']} ('auto' must be resolved first)."
        )
    x = tf.cast(pixels, tf.float32)
    if mode == "none":
        return x
    if mode == "unit":
        return x / 255.0
    if mode == "symmetric":
        return x / 127.5 - 1.0
    if mode == "caffe":
        return tf.reverse(x, axis=[-1]) - tf.constant(_CAFFE_BGR_MEAN, tf.float32)
    x = x / 255.0  # torch
    return (x - tf.constant(_TORCH_MEAN, tf.float32)) / tf.constant(_TORCH_STD, tf.float32)
