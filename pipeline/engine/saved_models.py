"""A TensorFlow SavedModel directory as a Keras model: its ``serving_default`` signature
wrapped with ``keras.layers.TFSMLayer``, one image tensor in, one tensor of class scores out
(a dict of one tensor too, as ``tf.saved_model.save`` signatures often return).

The graph is opaque to Keras: nothing in it can be rewritten (guided backprop, Grad-CAM's
layer, reduced precision, BatchNorm folding). When the signature returns probabilities (a
softmax inside the graph, as ``model.export()`` of a softmax classifier does), saliency at
them would vanish wherever the model is confident (p_c rounds to 1 in float32, and so does
its gradient). So the signature is frozen (its variables as constants, nested functions
inlined) and cut at the input of its last Softmax: the model's logits, the same as a Keras
model's head stripped (heads.py). Where no Softmax op is found (a probability output made
otherwise), the model is explained at its log-probabilities, log p = logit - logsumexp, and
a note says so; softmax(log p) = p keeps the reported probabilities the model's own.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

# The freezing TensorFlow's own converters (TFLite, TF.js) use on a ConcreteFunction.
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from pipeline.console import warn_once

__all__ = ["PROBABILITY_TOLERANCE", "load_saved_model"]

PROBABILITY_TOLERANCE = 1e-4  # |sum_c p_c - 1| on every probe row: the output is a softmax
_PROBES = 3  # zeros and two seeded random images
_LOG = logging.getLogger(__name__)


class SavedModelLogits(keras.layers.Layer):
    """A SavedModel signature cut at the input of its final Softmax: image -> logits.

    ``saved_model`` marks it for engine.graph.wraps_saved_model (one graph, no layers)."""

    saved_model = True

    def __init__(self, logits_fn, **kwargs):
        super().__init__(**kwargs)
        self._logits_fn = logits_fn

    def call(self, images):
        return self._logits_fn(images)

    def compute_output_shape(self, input_shape):
        return tuple(self._logits_fn.outputs[0].shape)


def _softmax_input(graph_def, output: str) -> str | None:
    """The tensor fed to the Softmax that ``output`` is (through Identity ops only)."""
    nodes = {n.name: n for n in graph_def.node}
    name = output.split(":")[0]
    while name in nodes and nodes[name].op in ("Identity", "IdentityN") and nodes[name].input:
        name = nodes[name].input[0].split(":")[0].lstrip("^")
    node = nodes.get(name)
    if node is None or node.op != "Softmax":
        return None
    source = node.input[0]
    return source if ":" in source else f"{source}:0"


def logits_graph(loaded) -> SavedModelLogits | None:
    """The serving signature of the loaded SavedModel (``tf.saved_model.load``'s object,
    held while freezing: the variables live in it) cut before its final Softmax, or None
    when its output is no Softmax."""
    frozen = convert_variables_to_constants_v2(loaded.signatures["serving_default"])
    graph_def = frozen.graph.as_graph_def()
    if len(frozen.outputs) != 1:
        return None
    logits = _softmax_input(graph_def, frozen.outputs[0].name)
    if logits is None:
        return None
    for node in graph_def.node:  # custom-gradient markers name Python functions of the
        node.attr.pop("_gradient_op_type", None)  # exporting process: use the ops' own

    def imported():
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imported, [])
    fn = wrapped.prune(wrapped.graph.get_tensor_by_name(frozen.inputs[0].name),
                       wrapped.graph.get_tensor_by_name(logits))  # fmt: skip
    return SavedModelLogits(fn, name="saved_model_logits")


class LogProbabilities(keras.layers.Layer):
    """log(max(p, tiny)): a softmax output back on the logits' scale (up to a constant)."""

    def call(self, probabilities):
        return keras.ops.log(keras.ops.maximum(probabilities, 1e-30))


def _signature_input(layer: keras.layers.TFSMLayer, name: str):
    _, named = layer.call_endpoint_fn.structured_input_signature
    if len(named) != 1:
        raise ValueError(
            f"SavedModel {name!r}: serving_default must take one image tensor; it takes "
            f"{sorted(named)}."
        )
    (signature,) = named.values()
    if len(signature.shape) != 4:
        raise ValueError(
            f"SavedModel {name!r}: serving_default input must be [batch, H, W, C]; it is "
            f"{signature.shape}."
        )
    return signature


def _single(outputs, name: str):
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise ValueError(
                f"SavedModel {name!r}: serving_default must return one tensor of class "
                f"scores; it returns {sorted(outputs)}."
            )
        (outputs,) = outputs.values()
    return outputs


def returns_probabilities(model: keras.Model) -> bool:
    """Whether ``model``'s rows are probability vectors on a few probe images (zeros, then
    seeded normal noise): non-negative, at most 1, summing to 1."""
    shape = (_PROBES, *model.input_shape[1:])
    probes = np.random.default_rng(0).normal(0.0, 1.0, shape).astype(np.float32)
    probes[0] = 0.0
    out = np.asarray(model(probes), np.float64)
    if out.ndim != 2 or out.shape[1] < 2 or not np.all(np.isfinite(out)):
        return False
    in_range = out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    return bool(in_range and np.all(np.abs(out.sum(axis=1) - 1.0) <= PROBABILITY_TOLERANCE))


def load_saved_model(
    path: str, name: str, input_size: tuple[int, int] | None
) -> tuple[keras.Model, tuple[str, ...]]:
    """(the SavedModel at ``path`` as a Keras model of class scores, notes on how it is
    explained). ``input_size`` fixes a signature that takes any image size."""
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    signature = _signature_input(layer, name)
    shape = list(signature.shape)
    if input_size is not None:
        shape[1:3] = input_size
    if shape[1] is None or shape[2] is None or shape[3] is None:
        raise ValueError(
            f"SavedModel {name!r} accepts any image size: set model.input_size to [height, width]."
        )
    inputs = keras.Input(shape=tuple(shape[1:]), dtype=signature.dtype.name)
    outputs = _single(layer(inputs), name)
    model_name = Path(path.rstrip("/")).name or "savedmodel"
    model = keras.Model(inputs, outputs, name=model_name)
    if not returns_probabilities(model):
        return model, ()
    # the TFSMLayer's own load (Keras keeps it as _reloaded_obj): a large SavedModel is read
    # from storage once; loaded again only if a Keras release renames it
    cut = logits_graph(getattr(layer, "_reloaded_obj", None) or tf.saved_model.load(path))
    if cut is not None:  # the logits inside the graph, as for a Keras model's softmax
        _LOG.info("SavedModel %r: explained at the input of its final Softmax (the logits)",
                  name)  # fmt: skip
        return keras.Model(inputs, cut(inputs), name=model_name), ()
    note = (f"model {name!r} is a SavedModel that returns probabilities, and no Softmax op "
            "feeds its output: scores and maps are taken at its log-probabilities, log p = "
            "logit - logsumexp; the probabilities reported are its own")  # fmt: skip
    warn_once(_LOG, note)
    return keras.Model(inputs, LogProbabilities(name="log_probabilities")(outputs),
                       name=model_name), (note,)  # fmt: skip
