"""Numeric precision of the model: float32, mixed_float16, mixed_bfloat16, or auto.

``cast_model`` returns a clone whose layers use ``keras.DTypePolicy(precision)``: variables
stay float32, computation runs in the reduced type, and the output is cast back to float32.
It composes with ``guided.guided_model`` in either order, e.g.
``cast_model(guided_model(m)[0], p)`` keeps the guided gradient, because the guided
activations are registered Keras serializables that survive the config round trip.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from pipeline.choices import PRECISIONS
from pipeline.console import warn_once
from pipeline.engine.graph import (
    all_layers,
    check_cloneable,
    clone_rewritten,
    model_inputs,
    plain_clone,
    wraps_saved_model,
)

__all__ = [
    "PRECISIONS",
    "cast_model",
    "configure_gpus",
    "cpu_supports_bf16",
    "resolve_precision",
    "usable_precision",
]

_LOG = logging.getLogger(__name__)

_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
_OUTPUT_CAST_NAME = "float32_output"


def _check_name(name: Any) -> None:
    if name not in PRECISIONS:
        raise ValueError(
            f"precision={name!r} is not supported; allowed: {list(PRECISIONS)}. "
            "Use 'auto' to pick mixed_float16 on a GPU, mixed_bfloat16 on a CPU with "
            "native bf16 (float32 for depthwise-convolution models there), float32 otherwise."
        )


def gpu_available() -> bool:
    """True when TensorFlow sees at least one GPU."""
    return bool(tf.config.list_physical_devices("GPU"))


def cpu_supports_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when the CPU flags include native bf16 (AVX512_BF16 or AMX_BF16)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return any(flag in flags for flag in _BF16_CPU_FLAGS)
    return False


# Layers whose bfloat16 kernels are slower than float32 ones on CPUs (oneDNN): with any of
# them, a whole model's vanilla map took 0.70-0.88x the float32 time in mixed_bfloat16
# (MobileNetV2 0.88, MobileNetV3Small 0.70, EfficientNetB0 0.77; ConvNeXtTiny 1.06), while
# models without them gain (ResNet50 1.78, DenseNet121 1.51), on an AVX512_BF16 EPYC.
_SLOW_IN_BF16_ON_CPU = tuple(
    cls
    for cls in (
        getattr(keras.layers, "DepthwiseConv1D", None),
        keras.layers.DepthwiseConv2D,
        getattr(keras.layers, "SeparableConv1D", None),
        keras.layers.SeparableConv2D,
    )
    if cls is not None
)


def resolve_precision(name: str, model: keras.Model | None = None) -> str:
    """Map a precision name to a concrete one; "auto" depends on the device (and model).

    auto -> "mixed_float16" with a visible GPU; on a CPU with native bf16
    "mixed_bfloat16", except for a ``model`` with depthwise or separable convolutions,
    which runs faster in "float32" there; else "float32". Other names are returned
    unchanged; unknown names raise.
    """
    _check_name(name)
    if name != "auto":
        return name
    if gpu_available():
        return "mixed_float16"
    if cpu_supports_bf16():
        if model is not None and any(
            isinstance(layer, _SLOW_IN_BF16_ON_CPU) for layer in all_layers(model)
        ):
            return "float32"
        return "mixed_bfloat16"
    return "float32"


def usable_precision(name: str, model: keras.Model) -> tuple[str, str | None]:
    """(the precision ``model``'s maps are computed in, the reason when it is not the one
    asked for). A SavedModel's graph has its dtypes fixed and no layers to cast, so it runs
    in float32 whatever was asked; the reason is logged once per process."""
    resolved = resolve_precision(name, model)
    if resolved == "float32" or not wraps_saved_model(model):
        return resolved, None
    asked = f"{name!r}" if name == resolved else f"{name!r} ({resolved} here)"
    note = (f"precision {asked} runs as float32 for model {model.name!r}: it is a TensorFlow "
            "SavedModel, whose graph has fixed dtypes and no Keras layers to cast (load the "
            "Keras model itself for reduced precision)")  # fmt: skip
    warn_once(_LOG, note)
    return "float32", note


def _is_float_policy(layer: keras.layers.Layer) -> bool:
    compute = keras.backend.standardize_dtype(layer.dtype_policy.compute_dtype)
    return compute in ("float16", "bfloat16", "float32", "float64")


def _recast(policy: str, op: Any) -> Any:
    """clone_function: the same layer, rebuilt from its config with ``policy``."""
    if not isinstance(op, keras.layers.Layer):
        return op  # plain operations compute in the dtype that flows into them
    keep = op.name.startswith(_OUTPUT_CAST_NAME)  # an earlier cast_model's float32 output
    if "dtype" in op.get_config() and _is_float_policy(op) and not keep:
        return plain_clone(op, dtype=policy)
    return plain_clone(op)


def cast_model(model: keras.Model, precision: str) -> keras.Model:
    """A clone of ``model`` computing in ``precision`` with the same (float32) weights.

    "float32" returns ``model`` itself; "auto" is resolved first. The clone's outputs
    are cast to float32 by a final ``Activation("linear", dtype="float32")``.
    """
    precision = resolve_precision(precision)
    if precision == "float32":
        return model
    check_cloneable(model)
    clone = clone_rewritten(model, functools.partial(_recast, precision))
    return _with_float32_outputs(clone)


def _with_float32_outputs(clone: keras.Model) -> keras.Model:
    """Append a float32 linear Activation to each output, so callers always get float32."""
    outputs = clone.outputs
    casted = []
    for index, tensor in enumerate(outputs):
        if tensor._keras_history.operation.name.startswith(_OUTPUT_CAST_NAME):
            casted.append(tensor)
            continue
        name = _OUTPUT_CAST_NAME if len(outputs) == 1 else f"{_OUTPUT_CAST_NAME}_{index}"
        casted.append(keras.layers.Activation("linear", dtype="float32", name=name)(tensor))
    result = casted[0] if len(casted) == 1 else casted
    return keras.Model(model_inputs(clone), result, name=clone.name)


_configured: set[str] = set()


def configure_gpus() -> list[str]:
    """Enable memory growth on every visible GPU; idempotent, a no-op on CPU.

    Returns the names of the GPUs seen. Must run before TensorFlow initialises them;
    afterwards TF refuses the change, which is ignored (growth was set already, or the
    process chose otherwise before us).
    """
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        if gpu.name in _configured:
            continue
        # RuntimeError: devices already initialised, the setting can no longer change.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
        _configured.add(gpu.name)
    return [gpu.name for gpu in gpus]
