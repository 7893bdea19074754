"""Guided-backprop rewrite of a Keras model (Springenberg et al. 2014).

``guided_model(model)`` clones a Functional or Sequential model and replaces every
rectifier-like activation ``f`` by one whose forward pass is the very same op with the
very same arguments, and whose backward pass is the guided rule::

    dL/dx = relu(dy) * f'(x) * [x > 0]

``f'`` is obtained by differentiating the original forward function, so ReLU with
``max_value`` m gives ``[0 < x < m]``, a ``threshold`` t gives ``[x > t]`` (or the
``negative_slope`` between 0 and t), GELU exact and approximate each keep their own
derivative, and so on. sigmoid / hard_sigmoid / tanh / softmax / linear stay untouched.

What gets patched (matched by identity, since strings are resolved when layers are built):

- ``activation`` attributes of any layer (Activation, Dense, Conv*, DepthwiseConv2D,
  SeparableConv2D, ...) holding relu, relu6, leaky_relu, elu, selu, celu, silu/swish,
  hard_silu/hard_swish, gelu or mish from ``keras.activations``, the same functions from
  ``keras.ops``, or ``tf.nn`` relu / relu6 / leaky_relu / elu / selu / silu / gelu;
- the layers ReLU (max_value, threshold, negative_slope), LeakyReLU, ELU and PReLU;
- plain keras operations in a functional graph (``keras.ops.relu(x)``, ``keras.activations.
  silu(x)`` applied to a symbolic tensor, ...).

Callables that are not keras / TF functions are left as they are, listed in
``GuidedReport.unknown`` and warned about. Recurrent layers, subclassed models and
SavedModel wrappers (``keras.layers.TFSMLayer``) cannot be rewritten: the last two raise.

The replacements (``GuidedFunction``, ``GuidedOperation``, ``GuidedPReLU``) are registered
Keras serializables, so a guided model can itself be cloned again, for example by
``precision.cast_model``.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from pipeline.engine.graph import SAVEDMODEL_MESSAGE, all_layers, clone_rewritten, plain_clone
from pipeline.engine.rectifiers import FORWARD, KEY_BY_ID, OPERATIONS

__all__ = [
    "GuidedFunction",
    "GuidedOperation",
    "GuidedPReLU",
    "GuidedReport",
    "guided_apply",
    "guided_model",
    "rectifier_key",
]

_PACKAGE = "pipeline.guided"


@dataclasses.dataclass(frozen=True)
class GuidedReport:
    """What ``guided_model`` did.

    patched: names of the layers (or graph operations) whose activation got the guided
        gradient, in graph order.
    unknown: names of layers with custom activations that were left as they are (warned).
    """

    patched: tuple[str, ...]
    unknown: tuple[str, ...]


def rectifier_key(fn: Any) -> str | None:
    """The ``FORWARD`` key of a rectifier-like activation function, or None."""
    if isinstance(fn, GuidedFunction):
        return fn.function
    return KEY_BY_ID.get(id(fn))


def guided_apply(forward: Callable[[tf.Tensor], tf.Tensor], x: Any) -> tf.Tensor:
    """``forward(x)`` with the guided-backprop gradient ``relu(dy) * f'(x) * [x > 0]``.

    ``f'`` comes from differentiating ``forward`` itself (recomputed in the backward
    pass), so the rule always matches the forward function and its options exactly.
    """
    x = tf.convert_to_tensor(x)

    @tf.custom_gradient
    def _guided(inputs: tf.Tensor) -> tuple[tf.Tensor, Callable]:
        outputs = forward(inputs)

        def _grad(upstream: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                again = forward(inputs)
            gate = tf.nn.relu(upstream) * tf.cast(inputs > 0, upstream.dtype)
            grad = tape.gradient(again, inputs, output_gradients=gate)
            return tf.zeros_like(inputs) if grad is None else grad

        return outputs, _grad

    return _guided(x)


_PLAIN_RELU = ("relu", "ops.relu", "tf.nn.relu")
_PLAIN_RELU6 = ("relu6", "ops.relu6", "tf.nn.relu6")


def _rectifier_cap(function: str, options: dict[str, Any]) -> float | None | bool:
    """The cap m of a plain rectifier (None: uncapped); False: not a plain rectifier."""
    if function in _PLAIN_RELU6:
        return 6.0
    if (
        function in _PLAIN_RELU
        and not options.get("negative_slope")
        and not options.get("threshold")
    ):
        return options.get("max_value")
    return False


@tf.custom_gradient
def _positive_gate(y: tf.Tensor) -> tuple[tf.Tensor, Callable]:
    """Identity forward; backward passes only the positive part of the upstream gradient."""
    return tf.identity(y), tf.nn.relu


def _guided_rectifier(forward: Callable[[tf.Tensor], tf.Tensor], x: Any, cap: Any) -> tf.Tensor:
    """``forward(x)`` with the closed form of the guided rule for a plain (capped) ReLU:
    relu(dy) * [0 < x < m].

    For relu and relu6 the gate sits *after* the op: the op keeps its own gradient
    (ReluGrad / Relu6Grad of the output, which is [0 < x < m]) and only sees relu(dy). The
    pre-activation is then not captured by the backward, so grappler still fuses
    Conv2D+BiasAdd+Relu(6) and nothing is recomputed: guided costs 0.98x vanilla on
    MobileNetV2 (0.94x with the gate before the op; 0.76x re-running the forward under a
    nested tape), see benchmarks/RESULTS.md. Other caps go through relu + clip, whose
    gradient at exactly x == m differs, so they mask explicitly.
    """
    x = tf.convert_to_tensor(x)
    if cap is None or float(cap) == 6.0:
        return _positive_gate(forward(x))

    @tf.custom_gradient
    def _guided(inputs: tf.Tensor) -> tuple[tf.Tensor, Callable]:
        outputs = forward(inputs)

        def _grad(upstream: tf.Tensor) -> tf.Tensor:
            keep = tf.logical_and(outputs > 0, outputs < tf.cast(cap, outputs.dtype))
            return tf.where(keep, tf.nn.relu(upstream), tf.zeros_like(upstream))

        return outputs, _grad

    return _guided(x)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GuidedFunction:
    """A serializable activation callable: forward ``FORWARD[function](x, **options)``,
    backward the guided rule. Used in ``activation`` attributes and Activation layers."""

    def __init__(self, function: str, **options: Any) -> None:
        if function not in FORWARD:
            raise ValueError(
                f"GuidedFunction: function={function!r} is not a supported rectifier; "
                f"allowed: {sorted(FORWARD)}."
            )
        self.function = function
        self.options = dict(options)
        self.__name__ = f"guided_{function.replace('.', '_')}"

    def __call__(self, x: Any) -> tf.Tensor:
        forward = functools.partial(FORWARD[self.function], **self.options)
        cap = _rectifier_cap(self.function, self.options)
        if cap is False:
            return guided_apply(forward, x)
        return _guided_rectifier(forward, x, cap)

    def get_config(self) -> dict[str, Any]:
        return {"function": self.function, "options": dict(self.options)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GuidedFunction:
        return cls(config["function"], **config.get("options", {}))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, GuidedFunction)
            and other.function == self.function
            and other.options == self.options
        )

    def __hash__(self) -> int:
        return hash((self.function, tuple(sorted(self.options.items()))))

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in sorted(self.options.items()))
        return f"GuidedFunction({self.function!r}{opts})"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GuidedOperation(keras.layers.Layer):
    """Stands in for a plain keras operation (``keras.ops.relu(x)`` in a functional graph).

    Like the operation it replaces, it computes in the dtype of its input (no autocast).
    """

    def __init__(self, function: str, options: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.guided = GuidedFunction(function, **(options or {}))
        self.supports_masking = True
        self._convert_input_args = False  # an operation does not cast its input
        self._build_at_init()

    def call(self, inputs: Any) -> tf.Tensor:
        return self.guided(inputs)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"function": self.guided.function, "options": dict(self.guided.options)})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GuidedPReLU(keras.layers.PReLU):
    """PReLU with the guided gradient on its input (alpha gets no gradient)."""

    def call(self, inputs: Any) -> tf.Tensor:
        alpha = tf.cast(tf.convert_to_tensor(self.alpha), inputs.dtype)

        def _forward(x: tf.Tensor) -> tf.Tensor:
            # The same ops as keras.layers.PReLU.call, so the forward is bit-identical.
            return keras.activations.relu(x) + (-alpha) * keras.activations.relu(-x)

        return guided_apply(_forward, inputs)


# --------------------------------------------------------------------------- cloning


class _Rewriter:
    """The clone_function for keras.models.clone_model; records what it did."""

    def __init__(self) -> None:
        self.patched: list[str] = []
        self.unknown: list[str] = []

    def __call__(self, op: Any) -> Any:
        if not isinstance(op, keras.layers.Layer):
            return self._operation(op)
        if isinstance(op, keras.layers.TFSMLayer):
            raise ValueError(SAVEDMODEL_MESSAGE)
        if isinstance(op, keras.Model):
            # Functional / Sequential sub-models are cloned recursively by clone_model;
            # anything reaching here is a subclassed model we cannot look into.
            raise ValueError(
                f"guided_model: nested model {op.name!r} is a subclassed "
                f"{type(op).__name__}; only Functional and Sequential models can be "
                "rewritten for guided backprop."
            )
        replacement = self._layer(op)
        return replacement if replacement is not None else plain_clone(op)

    def _operation(self, op: Any) -> Any:
        for cls, key, attrs in OPERATIONS:
            if type(op) is cls:
                options = {attr: getattr(op, attr) for attr in attrs}
                self.patched.append(op.name)
                return GuidedOperation(key, options, name=op.name)
        return op  # x + 3.0, residual adds, ...: reused as they are (no state)

    def _layer(self, layer: keras.layers.Layer) -> keras.layers.Layer | None:
        policy = layer.dtype_policy
        if isinstance(layer, GuidedPReLU | GuidedOperation):
            self.patched.append(layer.name)
            return None
        if isinstance(layer, keras.layers.PReLU):
            self.patched.append(layer.name)
            return GuidedPReLU.from_config(layer.get_config())
        simple = _simple_activation_layer(layer)
        if simple is not None:
            self.patched.append(layer.name)
            key, options = simple
            return keras.layers.Activation(
                GuidedFunction(key, **options), name=layer.name, dtype=policy
            )
        if isinstance(layer, keras.layers.RNN):
            return None  # recurrent activations are out of scope (image classifiers)
        fn = getattr(layer, "activation", None)
        if fn is None or not callable(fn):
            return None
        key = rectifier_key(fn)
        if key is not None:
            self.patched.append(layer.name)
            guided = fn if isinstance(fn, GuidedFunction) else GuidedFunction(key)
            return _clone_with_activation(layer, guided)
        if not _is_builtin(fn):
            self.unknown.append(layer.name)
        return None


def _simple_activation_layer(layer: keras.layers.Layer) -> tuple[str, dict[str, Any]] | None:
    """The dedicated activation layers that map onto one activation function."""
    if isinstance(layer, keras.layers.ReLU):
        return "relu", {
            "negative_slope": layer.negative_slope,
            "max_value": layer.max_value,
            "threshold": layer.threshold,
        }
    if isinstance(layer, keras.layers.LeakyReLU):
        return "leaky_relu", {"negative_slope": layer.negative_slope}
    if isinstance(layer, keras.layers.ELU):
        return "elu", {"alpha": layer.alpha}
    return None


def _is_builtin(fn: Any) -> bool:
    """keras / TF functions (sigmoid, tanh, softmax, linear, ...) are known, not custom."""
    module = getattr(fn, "__module__", None) or ""
    return module.startswith(("keras.", "tensorflow."))


def _clone_with_activation(layer: keras.layers.Layer, activation: Any) -> keras.layers.Layer:
    if "activation" in layer.get_config():
        return plain_clone(layer, activation=activation)
    clone = plain_clone(layer)
    clone.activation = activation  # a custom layer that keeps .activation out of its config
    return clone


def _leftover_rectifiers(model: keras.Model, patched: set[str]) -> list[str]:
    """Rectifiers inside custom composite layers that the rewrite could not reach."""
    left = []
    for layer in all_layers(model):
        if layer.name in patched or isinstance(layer, keras.Model):
            continue
        fn = getattr(layer, "activation", None)
        vanilla_fn = (
            callable(fn) and not isinstance(fn, GuidedFunction) and rectifier_key(fn) is not None
        )
        vanilla_layer = isinstance(layer, keras.layers.PReLU) and not isinstance(layer, GuidedPReLU)
        if (vanilla_fn or vanilla_layer or _simple_activation_layer(layer)) and not isinstance(
            layer, keras.layers.RNN
        ):
            left.append(layer.name)
    return left


def guided_model(model: keras.Model) -> tuple[keras.Model, GuidedReport]:
    """Clone ``model`` with guided-backprop gradients through its rectifiers.

    The clone's forward pass is identical to the original's (same ops, same weights).
    Raises ValueError when nothing could be patched, or when the model cannot be cloned
    (subclassed model, SavedModel wrapper). Custom activations are left as they are and
    reported in ``GuidedReport.unknown`` with a warning.
    """
    rewriter = _Rewriter()
    clone = clone_rewritten(model, rewriter)
    unknown = list(dict.fromkeys(rewriter.unknown))
    unknown += [
        name for name in _leftover_rectifiers(clone, set(rewriter.patched)) if name not in unknown
    ]
    report = GuidedReport(patched=tuple(dict.fromkeys(rewriter.patched)), unknown=tuple(unknown))
    if report.unknown:
        warnings.warn(
            f"guided_model: layers {list(report.unknown)} of model {model.name!r} use custom "
            "activations (or sit inside custom layers) and keep their vanilla gradient.",
            stacklevel=2,
        )
    if not report.patched:
        raise ValueError(
            f"guided_model: model {model.name!r} has no rectifier activation to patch "
            f"(looked for {sorted(k for k in FORWARD if '.' not in k)} as activations, "
            "ReLU / LeakyReLU / ELU / PReLU layers and keras ops). Guided backprop needs "
            "at least one; use the 'vanilla' or 'smoothgrad' method for this model."
        )
    return clone, report
