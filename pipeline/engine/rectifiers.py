"""The rectifier-like activations guided backprop patches, matched by identity.

Strings are resolved to functions when layers are built ("swish" shows up as silu,
"hard_swish" as hard_silu), so the tables hold the function objects themselves.
"""

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf
from keras.src.activations import activations as _activations_impl
from keras.src.ops import nn as _ops_nn

# Forward functions that get the guided gradient, by a stable key (used in configs).
FORWARD: dict[str, Callable[..., Any]] = {
    "relu": keras.activations.relu,
    "relu6": keras.activations.relu6,
    "leaky_relu": keras.activations.leaky_relu,
    "elu": keras.activations.elu,
    "selu": keras.activations.selu,
    "celu": keras.activations.celu,
    "silu": keras.activations.silu,
    "hard_silu": keras.activations.hard_silu,
    "gelu": keras.activations.gelu,
    "mish": keras.activations.mish,
    "ops.relu": keras.ops.relu,
    "ops.relu6": keras.ops.relu6,
    "ops.leaky_relu": keras.ops.leaky_relu,
    "ops.elu": keras.ops.elu,
    "ops.selu": keras.ops.selu,
    "ops.celu": keras.ops.celu,
    "ops.silu": keras.ops.silu,
    "ops.hard_silu": keras.ops.hard_silu,
    "ops.gelu": keras.ops.gelu,
    "tf.nn.relu": tf.nn.relu,
    "tf.nn.relu6": tf.nn.relu6,
    "tf.nn.leaky_relu": tf.nn.leaky_relu,
    "tf.nn.elu": tf.nn.elu,
    "tf.nn.selu": tf.nn.selu,
    "tf.nn.silu": tf.nn.silu,
    "tf.nn.gelu": tf.nn.gelu,
}
# Aliases (swish is silu, hard_swish is hard_silu) are the same objects, so identity covers them.
KEY_BY_ID: dict[int, str] = {id(fn): key for key, fn in FORWARD.items()}

# Symbolic keras operations (ops.nn classes) -> (forward key, attributes that are options).
OPERATIONS: tuple[tuple[type, str, tuple[str, ...]], ...] = tuple(
    (cls, key, attrs)
    for cls, key, attrs in (
        (_activations_impl.ReLU, "relu", ("negative_slope", "max_value", "threshold")),
        (getattr(_ops_nn, "Relu", None), "ops.relu", ()),
        (getattr(_ops_nn, "Relu6", None), "ops.relu6", ()),
        (getattr(_ops_nn, "LeakyRelu", None), "ops.leaky_relu", ("negative_slope",)),
        (getattr(_ops_nn, "Elu", None), "ops.elu", ("alpha",)),
        (getattr(_ops_nn, "Selu", None), "ops.selu", ()),
        (getattr(_ops_nn, "Celu", None), "ops.celu", ("alpha",)),
        (getattr(_ops_nn, "Silu", None), "ops.silu", ()),
        (getattr(_ops_nn, "HardSilu", None), "ops.hard_silu", ()),
        (getattr(_ops_nn, "Gelu", None), "ops.gelu", ("approximate",)),
    )
    if cls is not None
)
