"""The model as the launcher must know it before a pipeline is built: loaded once per
process (the launcher's check and an in-process worker share it), its input geometry and
fingerprint, and its class names checked against its classes. Fails fast: nothing is read
before these pass."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

from pipeline.choices import CAM_METHODS, GUIDED_METHODS
from pipeline.config import ModelConfig, SaliencyConfig
from pipeline.config.checks import ConfigError
from pipeline.engine.from_config import model_spec
from pipeline.engine.graph import wraps_saved_model
from pipeline.engine.methods.gradcam import cam_layer
from pipeline.engine.models import LoadedModel, load_model
from pipeline.engine.precision import configure_gpus, usable_precision

__all__ = [
    "ModelGeometry",
    "ModelLoadError",
    "check_class_names",
    "check_methods",
    "load_once",
    "model_geometry",
]


class ModelLoadError(RuntimeError):
    """The configured model could not be loaded (raised before any data is read)."""


@dataclasses.dataclass(frozen=True)
class ModelGeometry:
    """What the pipeline must know of the model before it is built."""

    name: str
    input_size: tuple[int, int]
    channels: int
    fingerprint: str
    num_classes: int


@functools.lru_cache(maxsize=2)
def load_once(m: ModelConfig) -> LoadedModel:
    """One load per process and model config."""
    configure_gpus()  # memory growth before any TF op touches the GPU
    return load_model(model_spec(m))


def check_class_names(names: Sequence[str], num_classes: int) -> tuple[str, ...]:
    """``names`` when there are none or one per class; ConfigError naming model.class_names
    otherwise."""
    names = tuple(names)
    if names and len(names) != num_classes:
        raise ConfigError(
            f"model.class_names: {len(names)} names for a model with {num_classes} classes; "
            "give one name per class, in class-id order."
        )
    return names


def model_geometry(m: ModelConfig, *, class_names: Sequence[str]) -> ModelGeometry:
    """Load the model (ModelLoadError with its first line when it does not load) and check
    ``class_names`` (model.class_names, loaded) against its classes (ConfigError)."""
    try:
        loaded = load_once(m)
    except Exception as exc:
        lines = str(exc).strip().splitlines() or [""]
        first = lines[0][:300] + (" ..." if len(lines) > 1 or len(lines[0]) > 300 else "")
        raise ModelLoadError(f"model {m.name!r}: {type(exc).__name__}: {first}") from exc
    check_class_names(class_names, loaded.num_classes)
    return ModelGeometry(
        name=loaded.name,
        input_size=tuple(loaded.input_size),
        channels=loaded.channels,
        fingerprint=loaded.fingerprint,
        num_classes=loaded.num_classes,
    )


def check_methods(m: ModelConfig, saliency: SaliencyConfig) -> None:
    """ConfigError when a method cannot run on the (loaded) model: guided or Grad-CAM
    methods on a SavedModel (wherever it is stored), Grad-CAM on a model without a spatial
    4-D layer, or a saliency.gradcam_layer that is none."""
    layered = [x for x in saliency.methods if x in GUIDED_METHODS or x in CAM_METHODS]
    if layered and wraps_saved_model(load_once(m).model):
        raise ConfigError(
            f"saliency.methods {layered}: these rewrite or read the model's Keras layers, and "
            f"model.name {m.name!r} is a TensorFlow SavedModel (one graph, no Keras layers). "
            "Fix: load the Keras model itself (model.save('m.keras')), or use vanilla / "
            "smoothgrad / integrated_gradients."
        )
    if any(method in CAM_METHODS for method in saliency.methods):
        try:
            cam_layer(load_once(m).model, saliency.gradcam_layer)
        except ValueError as exc:
            raise ConfigError(f"saliency.methods: {exc}") from exc


def model_notes(m: ModelConfig, saliency: SaliencyConfig) -> tuple[str, ...]:
    """How the (loaded) model is explained where that differs from what was asked or from
    the default: a SavedModel's precision, its probabilities. Each is logged once and goes
    into the run summary's ``notes``."""
    loaded = load_once(m)
    _, precision_note = usable_precision(saliency.precision, loaded.model)
    return (*loaded.notes, *([precision_note] if precision_note else []))
