"""Load a classifier as a logits model, with its preprocessing and input size.

A model is named either by a ``keras.applications`` architecture ("MobileNetV2"; every
architecture Keras ships is registered, see ``applications()``) or by a path: a ``.keras``
file, a legacy ``.h5`` file, or a TensorFlow SavedModel directory, local or remote
(``gs://``, ``s3://``: copied to a local temporary path with ``tf.io.gfile`` first).

The loaded model always outputs float32 LOGITS: a softmax or sigmoid head is stripped
(``heads.logits_model``), and named applications are built with
``classifier_activation=None``.

SavedModel directories are wrapped with ``keras.layers.TFSMLayer`` (engine/saved_models.py:
one that returns probabilities is explained at its log-probabilities). Their graph is opaque
to Keras: the methods that rewrite or read its layers (guided, Grad-CAM) are refused before
any data is read, and reduced precision runs as float32 (engine.precision.usable_precision).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipeline.choices import PREPROCESSING_MODES
from pipeline.engine.applications import Application, applications
from pipeline.engine.fingerprint import directory_digest, fingerprint
from pipeline.engine.heads import float32_output, logits_model
from pipeline.engine.model_files import (
    MODEL_FILE_SUFFIXES,
    looks_like_path,
    resolve_custom_objects,
)
from pipeline.engine.preprocessing import preprocess
from pipeline.engine.saved_models import load_saved_model
from pipeline.engine.targets import resolve_head

__all__ = ["LoadedModel", "ModelSpec", "load_model"]

_WEIGHTS_SUFFIXES = (".h5", ".hdf5", ".keras")  # .weights.h5 ends in .h5


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
    head: "auto", "softmax" or "sigmoid": how logits become probabilities (choices.HEADS).
    """

    name: str
    weights: str | None = "imagenet"
    preprocessing: str = "auto"
    input_size: tuple[int, int] | None = None
    safe_mode: bool = True
    custom_objects: tuple[str, ...] = ()  # "module:attr" import paths, for model files
    head: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(
                f"model.name={self.name!r} must be a keras.applications name such as "
                "'MobileNetV2' or a path to a .keras / .h5 file or SavedModel directory."
            )
        if not self.is_application and not looks_like_path(self.name):
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
        resolve_head(self.head, None)  # a bad value fails here
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

    model: keras.Model  # outputs LOGITS (softmax / sigmoid stripped), float32 output
    name: str
    input_size: tuple[int, int]  # (H, W)
    channels: int  # 1 or 3
    preprocessing: str  # resolved mode (never "auto")
    fingerprint: str  # sha256 hex of architecture json + weights
    num_classes: int
    head: str = "softmax"  # "softmax" or "sigmoid" (multi-label): model.head resolved
    notes: tuple[str, ...] = ()  # how the model is explained where that is not the default

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
        model, digest, notes = _load_application(spec, app), None, ()
        mode = app.preprocessing if spec.preprocessing == "auto" else spec.preprocessing
    else:
        model, digest, notes = _load_file(spec)
        mode = spec.preprocessing
    model, _, kind = logits_model(model)
    model = float32_output(model)
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
        head=resolve_head(spec.head, kind),
        notes=notes,
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


def _load_file(spec: ModelSpec) -> tuple[keras.Model, str | None, tuple[str, ...]]:
    local, cleanup = _localize(spec.name, "model.name")
    if os.path.isdir(local):
        # The local copy is kept: the SavedModel's assets stay referenced by TFSMLayer.
        model, notes = load_saved_model(local, spec.name, spec.input_size)
        return model, directory_digest(local), notes
    try:
        model = _load_keras_file(local, spec)
    finally:
        cleanup()
    if spec.weights not in (None, "imagenet"):
        _load_weights(model, spec.weights)
    return model, None, ()


def _load_keras_file(local: str, spec: ModelSpec) -> keras.Model:
    if not local.lower().endswith(MODEL_FILE_SUFFIXES):
        raise ValueError(
            f"model.name={spec.name!r}: unsupported model file; expected one of "
            f"{list(MODEL_FILE_SUFFIXES)} or a SavedModel directory."
        )
    try:
        return keras.saving.load_model(
            local,
            safe_mode=spec.safe_mode,
            compile=False,
            custom_objects=resolve_custom_objects(spec.custom_objects) or None,
        )
    except ValueError as error:
        if "safe_mode" not in str(error):
            raise
        raise ValueError(
            f"model file {spec.name!r} contains Python code (a Lambda layer), which safe mode "
            "refuses to load. Set model.safe_mode: false only if you trust this file. "
            f"({error})"
        ) from error


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
