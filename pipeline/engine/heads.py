"""Classifier heads: strip a softmax or sigmoid so saliency is taken at the logits.

A softmax head comes as ``Dense/Conv(activation="softmax")`` (any layer whose
``activation`` is softmax), an ``Activation("softmax")`` or ``Softmax`` layer, a
``keras.ops.softmax`` op, or a nested model ending in one of these. A sigmoid head
(multi-label models) comes the same ways (``activation="sigmoid"``, ``Activation``,
``keras.ops.sigmoid``) and is stripped too: each class's probability is then
sigmoid(its logit), not a softmax over the classes (engine.targets.probabilities), and its
map is the logit's gradient, which does not vanish where the sigmoid saturates.
"""

from typing import Any

import keras
from keras.src.ops.nn import Sigmoid as _SigmoidOp
from keras.src.ops.nn import Softmax as _SoftmaxOp

from pipeline.engine.graph import model_inputs, plain_clone


def _output_node(model: keras.Model) -> tuple[Any, Any]:
    outputs = model.outputs
    if len(outputs) != 1:
        raise ValueError(
            f"model {model.name!r} has {len(outputs)} outputs; a classifier needs exactly one."
        )
    history = outputs[0]._keras_history
    node = history.operation._inbound_nodes[history.node_index]
    return history.operation, node


def _activation_kind(fn: Any) -> str | None:
    """ "softmax", "sigmoid" or None for an activation function."""
    if fn is keras.activations.softmax or fn is keras.ops.softmax:
        return "softmax"
    if fn is keras.activations.sigmoid or fn is keras.ops.sigmoid:
        return "sigmoid"
    return None


def strip_head(model: keras.Model) -> keras.Model:
    """The same model (shared weights) outputting the logits before its softmax / sigmoid.

    Handles a final ``Dense(activation="softmax")`` (or any layer whose ``activation`` is
    softmax or sigmoid: the layer is cloned with a linear activation and the same weights),
    an ``Activation`` or ``Softmax`` layer or ``keras.ops.softmax`` / ``sigmoid`` op (the
    model is cut at its input), and a nested model ending in one of these. Other models are
    returned unchanged.
    """
    return logits_model(model)[0]


def logits_model(model: keras.Model) -> tuple[keras.Model, str | None, str | None]:
    """``(model at its logits, what was stripped, "softmax" / "sigmoid")``; the last two
    are None (and the model returned as it is) when the head is neither."""
    op, node = _output_node(model)
    inputs = model_inputs(model)
    head_input = node.input_tensors[0] if node.input_tensors else None
    kind = type(op).__name__
    if isinstance(op, keras.layers.Softmax):
        return keras.Model(inputs, head_input, name=model.name), f"{kind} layer {op.name!r}", (
            "softmax")  # fmt: skip
    if isinstance(op, keras.layers.Activation) and _activation_kind(op.activation):
        what = f"{kind} layer {op.name!r}"
        return keras.Model(inputs, head_input, name=model.name), what, _activation_kind(
            op.activation)  # fmt: skip
    for op_type, head in ((_SoftmaxOp, "softmax"), (_SigmoidOp, "sigmoid")):
        if isinstance(op, op_type):
            what = f"keras.ops.{head} {op.name!r}"
            return keras.Model(inputs, head_input, name=model.name), what, head
    if isinstance(op, keras.Model):
        inner, what, head = logits_model(op)
        if what is None:
            return model, None, None
        outer = keras.Model(inputs, inner(head_input), name=model.name)
        return outer, f"{what} in {op.name!r}", head
    head = _activation_kind(getattr(op, "activation", None))
    if isinstance(op, keras.layers.Layer) and head:
        linear = plain_clone(op, activation="linear")
        logits = linear(head_input)
        linear.set_weights(op.get_weights())
        what = f"{kind} {op.name!r} activation"
        return keras.Model(inputs, logits, name=model.name), what, head
    return model, None, None


def float32_output(model: keras.Model) -> keras.Model:
    """``model`` with float32 outputs (a linear float32 Activation appended if needed)."""
    if keras.backend.standardize_dtype(model.outputs[0].dtype) == "float32":
        return model
    cast = keras.layers.Activation("linear", dtype="float32", name="float32_logits")
    return keras.Model(model_inputs(model), cast(model.outputs[0]), name=model.name)


def logits_base(model: Any) -> tuple[keras.Model, str | None, str | None]:
    """A float32 logits model sharing ``model``'s layers (never ``model`` itself, so an
    Explainer does not keep the caller's model object alive), the stripped head's
    description and its kind ("softmax" / "sigmoid"; None for both without one)."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"model: got {type(model).__name__}; a keras.Model classifier is required "
            "(use explain() for a ModelSpec or a model name)."
        )
    try:
        outputs = list(model.outputs)
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"model {model.name!r}: it has no defined outputs (a subclassed model that was "
            "never built on a keras.Input). Fix: build it functionally on keras.Input(shape)."
        ) from error
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        raise ValueError(
            f"model {model.name!r}: expected one classifier output of shape [B, classes]; got "
            f"{[tuple(o.shape) for o in outputs]}. Fix: pass a single-output classifier."
        )
    logits, stripped, head = logits_model(model)
    if logits is model:
        logits = keras.Model(model_inputs(model), model.outputs[0], name=model.name)
    return float32_output(logits), stripped, head
