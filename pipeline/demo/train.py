"""A small MobileNet-like classifier (ReLU6, swish, BatchNorm, a depthwise block) trained on
shortcut scenes: what the suite, the tests and the demo audit. Inputs are pixels / 255."""

from __future__ import annotations

import keras
import numpy as np


def build_model(size: int, classes: int) -> keras.Model:
    """Conv-BN-ReLU6 stem, swish and ReLU6 stages (one depthwise-separable), GAP, logits."""
    layers = keras.layers
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(24, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="swish", name="conv1")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw2")(x)
    x = layers.Conv2D(48, 1, use_bias=False, name="pw2")(x)
    x = layers.BatchNormalization(name="pw2_bn")(x)
    x = layers.ReLU(6.0, name="pw2_relu6")(x)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="swish", name="conv3")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv4")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"shortcut_cnn_{size}")


def train(images: np.ndarray, labels: np.ndarray, *, seed: int, epochs: int = 20) -> keras.Model:
    """The model of :func:`build_model` fitted to uint8 ``images`` (seeded)."""
    keras.utils.set_random_seed(seed)
    model = build_model(images.shape[1], int(labels.max()) + 1)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x = images.astype(np.float32) / 255.0
    model.fit(x, labels, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    return model
