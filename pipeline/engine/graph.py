"""Clone, walk and rewrite helpers for Functional / Sequential Keras graphs.

Shared by the guided rewrite, precision casting, BatchNorm folding and head stripping.
"""

from collections.abc import Callable
from typing import Any

import keras
from keras.src.models.functional import Functional
from keras.src.saving.serialization_lib import SafeModeScope

SAVEDMODEL_MESSAGE = (
    "guided_model: the model wraps a TensorFlow SavedModel (keras.layers.TFSMLayer), whose "
    "graph cannot be rewritten for guided backprop. Use the methods 'vanilla', 'smoothgrad' "
    "or 'integrated_gradients', or re-export the model as a .keras file."
)


def plain_clone(layer: keras.layers.Layer, **overrides: Any) -> keras.layers.Layer:
    """``layer`` rebuilt from its config with ``overrides``; a new layer, fresh weights.

    The activation object is handed over as is, so an unregistered custom function does
    not have to survive serialization.
    """
    config = layer.get_config()
    activation = getattr(layer, "activation", None)
    if "activation" in config and callable(activation):
        config["activation"] = activation
    config.update(overrides)
    return layer.__class__.from_config(config)


def wraps_saved_model(model: Any) -> bool:
    """Whether ``model`` is or holds a TensorFlow SavedModel (keras.layers.TFSMLayer): one
    graph with fixed dtypes and no Keras layers inside to clone, cast or rewrite."""

    def opaque(layer: Any) -> bool:  # TFSMLayer, or engine.saved_models' cut graph
        return isinstance(layer, keras.layers.TFSMLayer) or getattr(layer, "saved_model", False)

    if opaque(model):
        return True
    return isinstance(model, keras.Model) and any(opaque(x) for x in all_layers(model))


def check_cloneable(model: keras.Model) -> None:
    """Raise a clear ValueError when ``model`` cannot be rewritten layer by layer."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model, got {type(model).__name__}.")
    if wraps_saved_model(model):
        raise ValueError(
            f"model {model.name!r} wraps a TensorFlow SavedModel (keras.layers.TFSMLayer): its "
            "graph has no Keras layers to clone or rewrite. Fix: load the Keras model itself "
            "(a .keras file), or use what runs on the graph as it is (vanilla, smoothgrad, "
            "integrated_gradients in float32)."
        )
    if not isinstance(model, Functional | keras.Sequential):
        raise ValueError(
            f"model {model.name!r} is a subclassed {type(model).__name__}; only Functional "
            "and Sequential models can be cloned and rewritten."
        )


def model_inputs(model: keras.Model) -> Any:
    """The model's symbolic input(s): one tensor when single (``Sequential.input`` raises)."""
    inputs = model.inputs
    return inputs[0] if len(inputs) == 1 else inputs


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of ``model``, nested models' layers included (the model itself not)."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def copy_state(source: keras.Model, target: keras.Model) -> None:
    """Copy weights from ``source`` to its clone ``target`` and refresh derived state.

    ``set_weights`` does not recompute a Normalization layer's mean/variance tensors;
    ``finalize_state`` does.
    """
    target.set_weights(source.get_weights())
    for layer in all_layers(target):
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()


def clone_rewritten(model: keras.Model, clone_function: Callable[[Any], Any]) -> keras.Model:
    """clone_model (recursive) + weight copy + finalize_state."""
    check_cloneable(model)
    # The model is already in memory (and was vetted when it was loaded), so rebuilding its
    # Lambda layers from their configs is no new risk: lift safe mode for the clone only.
    with SafeModeScope(False):
        clone = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    copy_state(model, clone)
    return clone
