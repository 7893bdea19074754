"""Load a classifier as a logits model, with its preprocessing and input size.

A model is named either by a ``keras.applications`` architecture ("MobileNetV2"; every
architecture Keras ships is registered, see ``applications()``) or by a path: a ``.keras``
file, a legacy ``.h5`` file, or a TensorFlow SavedModel directory, local or remote
(``gs://``, ``s3://``: copied to a local temporary path with ``tf.io.gfile`` first).

The loaded model always outputs float32 LOGITS: a softmax head is stripped
(``strip_softmax``), and named applications are built with ``classifier_activation=None``.

SavedModel directories are wrapped with ``keras.layers.TFSMLayer`` (endpoint
"serving_default"). Their graph is opaque to Keras: they must already output logits, and
the guided methods (``guided``, ``guided_smoothgrad``) raise a clear error for them
(see ``pipeline.guided``); re-export such a model as ``.keras`` to get guided maps.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras.src.ops.nn import Softmax as _SoftmaxOp

from pipeline.guided import model_inputs, plain_clone

__all__ = [
    "PREPROCESSING_MODES",
    "Application",
    "LoadedModel",
    "ModelSpec",
    "applications",
    "fingerprint",
    "load_model",
    "preprocess",
    "strip_softmax",
]

PREPROCESSING_MODES = ("none", "unit", "symmetric", "caffe", "torch", "auto")
#  none: x (0..255 float)   unit: x/255   symmetric: x/127.5-1
#  caffe: RGB->BGR, minus ImageNet BGR mean   torch: x/255, minus mean, / std
#  auto: the keras.applications family's own preprocess_input (named models only)

_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

_MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
_WEIGHTS_SUFFIXES = (".h5", ".hdf5", ".keras")  # .weights.h5 ends in .h5

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


# --------------------------------------------------------------------------- preprocessing


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


# --------------------------------------------------------------------------- registry


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


def _looks_like_path(name: str) -> bool:
    return (
        "/" in name
        or os.sep in name
        or "://" in name
        or name.lower().endswith(_MODEL_FILE_SUFFIXES)
        or os.path.exists(name)
    )


# --------------------------------------------------------------------------- spec


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how to feed it (checked at construction).

    name: a ``keras.applications`` name ("MobileNetV2") or a path (.keras / .h5 /
        SavedModel directory; local, gs:// or s3://).
    weights: "imagenet", None (random init) or a local/remote weights file (.h5 / .keras)
        loaded with ``model.load_weights``. For model files, "imagenet" and None mean the
        file's own weights; a weights path is loaded on top.
    preprocessing: one of PREPROCESSING_MODES; "auto" only for named applications.
    input_size: (H, W); None: the model's own, or the family default.
    safe_mode: keras safe_mode for model files (refuses Lambda layers' Python code).
    """

    name: str
    weights: str | None = "imagenet"
    preprocessing: str = "auto"
    input_size: tuple[int, int] | None = None
    safe_mode: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(
                f"model.name={self.name!r} must be a keras.applications name such as "
                "'MobileNetV2' or a path to a .keras / .h5 file or SavedModel directory."
            )
        if not self.is_application and not _looks_like_path(self.name):
            close = difflib.get_close_matches(self.name, list(applications()), n=3, cutoff=0.6) or [
                n for n in applications() if n.lower() == self.name.lower()
            ]
            hint = f" Did you mean {close}?" if close else ""
            raise ValueError(
                f"model.name={self.name!r} is neither a keras.applications architecture nor "
                f"a path to a model file or SavedModel directory.{hint} Known names: "
                f"{sorted(applications())}."
            )
        self._check_weights()
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ValueError(
                f"model.preprocessing={self.preprocessing!r} is not one of "
                f"{list(PREPROCESSING_MODES)}."
            )
        if self.preprocessing == "auto" and not self.is_application:
            raise ValueError(
                f"model.preprocessing='auto' only works for keras.applications names; for the "
                f"model file {self.name!r} declare how it expects its pixels: one of "
                f"{[m for m in PREPROCESSING_MODES if m != 'auto']} (none: 0..255, unit: 0..1, "
                "symmetric: -1..1, caffe: BGR minus ImageNet mean, torch: ImageNet mean/std)."
            )
        object.__setattr__(self, "input_size", _check_input_size(self.input_size))
        if not isinstance(self.safe_mode, bool):
            raise ValueError(f"model.safe_mode={self.safe_mode!r} must be true or false.")

    @property
    def is_application(self) -> bool:
        """True when ``name`` is a keras.applications architecture."""
        return self.name in applications()

    def _check_weights(self) -> None:
        weights = self.weights
        if weights is None or weights == "imagenet":
            return
        if not isinstance(weights, str) or not weights.lower().endswith(_WEIGHTS_SUFFIXES):
            raise ValueError(
                f"model.weights={weights!r} must be 'imagenet', null (random weights) or a "
                f"weights file ending in {list(_WEIGHTS_SUFFIXES)} (e.g. the .h5 file from "
                "https://github.com/keras-team/keras-applications/releases)."
            )


def _check_input_size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    ok = (
        isinstance(size, tuple | list)
        and len(size) == 2
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in size)
        and all(v >= 1 for v in size)
    )
    if not ok:
        raise ValueError(
            f"model.input_size={size!r} must be null or [height, width] with two positive "
            "integers, e.g. [224, 224]."
        )
    return int(size[0]), int(size[1])


# --------------------------------------------------------------------------- loaded model


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A logits model ready for saliency, with what is needed to feed it."""

    model: keras.Model  # outputs LOGITS (softmax stripped), float32 output
    name: str
    input_size: tuple[int, int]  # (H, W)
    channels: int  # 1 or 3
    preprocessing: str  # resolved mode (never "auto")
    fingerprint: str  # sha256 hex of architecture json + weights
    num_classes: int

    def preprocess(self, pixels: Any) -> tf.Tensor:
        """Float pixels 0..255 ``[B, H, W, C]`` -> the model's input space."""
        return preprocess(pixels, self.preprocessing)

    def black_image(self) -> np.ndarray:
        """An all-black image in the model's input space, float32 [H, W, C]: the "black"
        baseline of integrated gradients."""
        black = np.zeros((1, *self.input_size, self.channels), np.float32)
        return np.asarray(self.preprocess(black), dtype=np.float32)[0]


def load_model(spec: ModelSpec) -> LoadedModel:
    """Build or load the model of ``spec`` as a float32 logits model."""
    if spec.is_application:
        app = applications()[spec.name]
        model, digest = _load_application(spec, app), None
        mode = app.preprocessing if spec.preprocessing == "auto" else spec.preprocessing
    else:
        model, digest = _load_file(spec)
        mode = spec.preprocessing
    model = _float32_output(strip_softmax(model))
    input_size, channels = _input_geometry(model, spec)
    if mode in ("caffe", "torch") and channels != 3:
        raise ValueError(
            f"model.preprocessing={mode!r} needs 3-channel RGB inputs but model "
            f"{spec.name!r} takes {channels} channel(s); use none, unit or symmetric."
        )
    output_shape = model.output_shape
    if not isinstance(output_shape, tuple) or len(output_shape) != 2 or not output_shape[-1]:
        raise ValueError(
            f"model {spec.name!r} must have one output of shape [batch, classes]; "
            f"it has {output_shape}."
        )
    return LoadedModel(
        model=model,
        name=spec.name,
        input_size=input_size,
        channels=channels,
        preprocessing=mode,
        fingerprint=digest or fingerprint(model),
        num_classes=int(output_shape[-1]),
    )


def _download_help(name: str) -> str:
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return (
        f"Could not download the ImageNet weights for {name} (no network?). Either set "
        "model.weights to a local weights file, e.g. --set model.weights=/path/to/the.h5 "
        "(the file from https://github.com/keras-team/keras-applications/releases or "
        "https://storage.googleapis.com/tensorflow/keras-applications/), or copy that file "
        f"into {os.path.join(home, 'models')}/ under its original name, where Keras looks "
        "before downloading."
    )


def _load_application(spec: ModelSpec, app: Application) -> keras.Model:
    height, width = spec.input_size or (app.input_size, app.input_size)
    kwargs: dict[str, Any] = {"include_top": True, "input_shape": (height, width, 3)}
    if app.classifier_activation:
        kwargs["classifier_activation"] = None  # logits directly (allowed with imagenet too)
    weights = "imagenet" if spec.weights == "imagenet" else None
    try:
        model = app.builder(weights=weights, **kwargs)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"cannot build {spec.name} with model.input_size={spec.input_size} and "
            f"model.weights={spec.weights!r}: {error}"
        ) from error
    except Exception as error:
        if weights != "imagenet":
            raise
        # keras' get_file raises a bare Exception ("URL fetch failure ...") when offline.
        raise RuntimeError(f"{_download_help(spec.name)} Cause: {error}") from error
    if spec.weights not in (None, "imagenet"):
        _load_weights(model, spec.weights)
    return model


def _load_weights(model: keras.Model, weights: str) -> None:
    local, cleanup = _localize(weights, "model.weights")
    try:
        model.load_weights(local)
    except (ValueError, KeyError, OSError) as error:
        raise ValueError(
            f"model.weights={weights!r} does not fit model {model.name!r}: {error}"
        ) from error
    finally:
        cleanup()


def _load_file(spec: ModelSpec) -> tuple[keras.Model, str | None]:
    local, cleanup = _localize(spec.name, "model.name")
    if os.path.isdir(local):
        # The local copy is kept: the SavedModel's assets stay referenced by TFSMLayer.
        return _load_savedmodel(local, spec), _directory_digest(local)
    try:
        model = _load_keras_file(local, spec)
    finally:
        cleanup()
    if spec.weights not in (None, "imagenet"):
        _load_weights(model, spec.weights)
    return model, None


def _load_keras_file(local: str, spec: ModelSpec) -> keras.Model:
    if not local.lower().endswith(_MODEL_FILE_SUFFIXES):
        raise ValueError(
            f"model.name={spec.name!r}: unsupported model file; expected one of "
            f"{list(_MODEL_FILE_SUFFIXES)} or a SavedModel directory."
        )
    try:
        return keras.saving.load_model(local, safe_mode=spec.safe_mode, compile=False)
    except ValueError as error:
        if "safe_mode" not in str(error):
            raise
        raise ValueError(
            f"model file {spec.name!r} contains Python code (a Lambda layer), which safe mode "
            "refuses to load. Set model.safe_mode: false only if you trust this file. "
            f"({error})"
        ) from error


def _load_savedmodel(path: str, spec: ModelSpec) -> keras.Model:
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    _, named = layer.call_endpoint_fn.structured_input_signature
    if len(named) != 1:
        raise ValueError(
            f"SavedModel {spec.name!r}: serving_default must take one image tensor; it takes "
            f"{sorted(named)}."
        )
    (signature,) = named.values()
    shape = list(signature.shape)
    if len(shape) != 4:
        raise ValueError(
            f"SavedModel {spec.name!r}: serving_default input must be [batch, H, W, C]; it is "
            f"{signature.shape}."
        )
    if spec.input_size is not None:
        shape[1:3] = spec.input_size
    if shape[1] is None or shape[2] is None or shape[3] is None:
        raise ValueError(
            f"SavedModel {spec.name!r} accepts any image size: set model.input_size "
            "to [height, width]."
        )
    inputs = keras.Input(shape=tuple(shape[1:]), dtype=signature.dtype.name)
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise ValueError(
                f"SavedModel {spec.name!r}: serving_default must return one tensor of logits; "
                f"it returns {sorted(outputs)}."
            )
        (outputs,) = outputs.values()
    return keras.Model(inputs, outputs, name=Path(path.rstrip("/")).name or "savedmodel")


def _localize(path: str, field: str) -> tuple[str, Callable[[], None]]:
    """A local copy of a remote (gs://, s3://, ...) path; local paths are checked only."""
    if "://" not in path or path.startswith("file://"):
        local = path.removeprefix("file://")
        if not os.path.exists(local):
            raise FileNotFoundError(f"{field}={path!r}: no such file or directory.")
        return local, lambda: None
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{field}={path!r}: not found (or not readable).")
    tmp = tempfile.mkdtemp(prefix="saliency-model-")
    local = os.path.join(tmp, os.path.basename(path.rstrip("/")) or "model")
    _copy_tree(path, local)
    return local, functools.partial(shutil.rmtree, tmp, ignore_errors=True)


def _copy_tree(source: str, target: str) -> None:
    """tf.io.gfile copy of a file or a directory tree."""
    if not tf.io.gfile.isdir(source):
        tf.io.gfile.copy(source, target, overwrite=True)
        return
    source = source.rstrip("/")
    for directory, _, files in tf.io.gfile.walk(source):
        relative = directory[len(source) :].lstrip("/")
        destination = os.path.join(target, relative)
        os.makedirs(destination, exist_ok=True)
        for name in files:
            tf.io.gfile.copy(f"{directory}/{name}", os.path.join(destination, name), True)


def _input_geometry(model: keras.Model, spec: ModelSpec) -> tuple[tuple[int, int], int]:
    shape = model.input_shape
    if not isinstance(shape, tuple) or len(shape) != 4:
        raise ValueError(
            f"model {spec.name!r} must take one image input [batch, H, W, C]; it takes {shape}."
        )
    _, height, width, channels = shape
    if channels not in (1, 3):
        raise ValueError(
            f"model {spec.name!r} takes {channels} channels; only 1 (grey) or 3 (RGB) work."
        )
    if height is None or width is None:
        if spec.input_size is None:
            raise ValueError(
                f"model {spec.name!r} accepts any image size: set model.input_size to "
                "[height, width]."
            )
        return spec.input_size, channels
    if spec.input_size is not None and spec.input_size != (height, width):
        raise ValueError(
            f"model.input_size={list(spec.input_size)} differs from the input size of "
            f"{spec.name!r}, {[height, width]}; remove model.input_size or match it."
        )
    return (height, width), channels


# --------------------------------------------------------------------------- softmax


def _output_node(model: keras.Model) -> tuple[Any, Any]:
    outputs = model.outputs
    if len(outputs) != 1:
        raise ValueError(
            f"model {model.name!r} has {len(outputs)} outputs; a classifier needs exactly one."
        )
    history = outputs[0]._keras_history
    node = history.operation._inbound_nodes[history.node_index]
    return history.operation, node


def _is_softmax(fn: Any) -> bool:
    return fn is keras.activations.softmax or fn is keras.ops.softmax


def strip_softmax(model: keras.Model) -> keras.Model:
    """The same model (shared weights) outputting the pre-softmax logits.

    Handles a final ``Dense(activation="softmax")`` (or any layer whose ``activation`` is
    softmax: the layer is cloned with a linear activation and the same weights), an
    ``Activation("softmax")`` or ``Softmax`` layer or ``keras.ops.softmax`` op (the model
    is cut at its input), and a nested model ending in one of these. Other models are
    returned unchanged.
    """
    op, node = _output_node(model)
    inputs = model_inputs(model)
    head_input = node.input_tensors[0] if node.input_tensors else None
    if isinstance(op, keras.layers.Softmax) or (
        isinstance(op, keras.layers.Activation) and _is_softmax(op.activation)
    ):
        return keras.Model(inputs, head_input, name=model.name)
    if isinstance(op, _SoftmaxOp):
        return keras.Model(inputs, head_input, name=model.name)  # keras.ops.softmax(x)
    if isinstance(op, keras.Model):
        inner = strip_softmax(op)
        if inner is op:
            return model
        return keras.Model(inputs, inner(head_input), name=model.name)
    if isinstance(op, keras.layers.Layer) and _is_softmax(getattr(op, "activation", None)):
        linear = plain_clone(op, activation="linear")
        logits = linear(head_input)
        linear.set_weights(op.get_weights())
        return keras.Model(inputs, logits, name=model.name)
    return model


def _float32_output(model: keras.Model) -> keras.Model:
    if keras.backend.standardize_dtype(model.outputs[0].dtype) == "float32":
        return model
    cast = keras.layers.Activation("linear", dtype="float32", name="float32_logits")
    return keras.Model(model_inputs(model), cast(model.outputs[0]), name=model.name)


# --------------------------------------------------------------------------- fingerprint


def _canonical_config(model: keras.Model) -> str:
    """The model's JSON config with layer names replaced by their order of appearance.

    Auto-generated names ("re_lu_7") depend on what was built earlier in the process, so
    they are renamed; everything else (classes, options, wiring) is kept.
    """
    config = keras.saving.serialize_keras_object(model)
    names: dict[str, str] = {}

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            name = node.get("name")
            if isinstance(name, str) and name not in names:
                names[name] = f"#{len(names)}"
            for value in node.values():
                collect(value)
        elif isinstance(node, list | tuple):
            for value in node:
                collect(value)

    def rename(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: rename(value) for key, value in node.items()}
        if isinstance(node, list | tuple):
            return [rename(value) for value in node]
        if isinstance(node, str):
            return names.get(node, node)
        return node

    collect(config)
    return json.dumps(rename(config), sort_keys=True, default=str)


def fingerprint(model: keras.Model) -> str:
    """sha256 hex over the model's (name-canonical) JSON config and all weight bytes."""
    digest = hashlib.sha256(_canonical_config(model).encode())
    for variable in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _directory_digest(path: str) -> str:
    """sha256 over a SavedModel directory (relative paths and file bytes, sorted)."""
    digest = hashlib.sha256()
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(functools.partial(handle.read, 1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
