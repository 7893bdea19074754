"""The registry of keras.applications architectures and what each one expects."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from pipeline.choices import PREPROCESSING_MODES
from pipeline.engine.preprocessing import preprocess

# keras.applications family (module name) -> what its preprocess_input does, as a mode.
# EfficientNet(V2), ConvNeXt and MobileNetV3 rescale inside the model: identity outside.
_FAMILY_PREPROCESSING = {
    "convnext": "none",
    "densenet": "torch",
    "efficientnet": "none",
    "efficientnet_v2": "none",
    "inception_resnet_v2": "symmetric",
    "inception_v3": "symmetric",
    "mobilenet": "symmetric",
    "mobilenet_v2": "symmetric",
    "mobilenet_v3": "none",
    "nasnet": "symmetric",
    "resnet": "caffe",
    "resnet_v2": "symmetric",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "xception": "symmetric",
}

# Default (ImageNet) input sizes that are not 224.
_DEFAULT_SIZES = {
    "InceptionV3": 299,
    "InceptionResNetV2": 299,
    "Xception": 299,
    "NASNetLarge": 331,
    "EfficientNetB1": 240,
    "EfficientNetB2": 260,
    "EfficientNetB3": 300,
    "EfficientNetB4": 380,
    "EfficientNetB5": 456,
    "EfficientNetB6": 528,
    "EfficientNetB7": 600,
    "EfficientNetV2B1": 240,
    "EfficientNetV2B2": 260,
    "EfficientNetV2B3": 300,
    "EfficientNetV2S": 384,
    "EfficientNetV2M": 480,
    "EfficientNetV2L": 480,
}


@dataclasses.dataclass(frozen=True)
class Application:
    """A ``keras.applications`` architecture and what it expects."""

    name: str
    builder: Callable[..., keras.Model]
    family: str  # module name: "resnet", "mobilenet_v2", ...
    preprocess_input: Callable[..., Any]  # the family's own function
    preprocessing: str  # the same thing as a mode of PREPROCESSING_MODES
    input_size: int  # default (ImageNet) square input size
    classifier_activation: bool  # whether the builder takes classifier_activation


def _probe_mode(preprocess_input: Callable[..., Any]) -> str:
    """Which mode a family's preprocess_input implements, found by trying them all."""
    probe = np.random.default_rng(0).uniform(0, 255, size=(1, 2, 2, 3)).astype(np.float32)
    expected = np.asarray(preprocess_input(probe.copy()))
    for mode in PREPROCESSING_MODES[:-1]:
        if np.allclose(preprocess(probe, mode).numpy(), expected, atol=1e-4):
            return mode
    raise ValueError(f"unrecognised preprocess_input {preprocess_input!r}")


@functools.cache
def applications() -> dict[str, Application]:
    """Every architecture in ``keras.applications``, enumerated from the module."""
    registry = {}
    for name in sorted(dir(keras.applications)):
        builder = getattr(keras.applications, name)
        if not (name[:1].isupper() and callable(builder)):
            continue
        family = builder.__module__.rsplit(".", 1)[-1]
        module = getattr(keras.applications, family, None)
        preprocess_input = getattr(module, "preprocess_input", None)
        if preprocess_input is None:
            continue
        mode = _FAMILY_PREPROCESSING.get(family) or _probe_mode(preprocess_input)
        params = inspect.signature(builder).parameters
        registry[name] = Application(
            name=name,
            builder=builder,
            family=family,
            preprocess_input=preprocess_input,
            preprocessing=mode,
            input_size=_DEFAULT_SIZES.get(name, 224),
            classifier_activation="classifier_activation" in params,
        )
    return registry
