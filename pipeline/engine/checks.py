"""Argument checks shared by the engine's public entry points (errors name the argument,
the value given and what is allowed)."""

import numbers
from typing import Any

import numpy as np

from pipeline.choices import METHODS


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: got {value!r}; an integer >= {minimum} is required.")
    if value < minimum:
        raise ValueError(f"{name}: got {value!r}; it must be >= {minimum}. Fix: raise {name}.")
    return int(value)


def check_method(method: Any) -> str:
    if method not in METHODS:
        raise ValueError(
            f"method: got {method!r}; allowed values are {list(METHODS)}. "
            "Fix: pick one of them (e.g. 'vanilla')."
        )
    return method


def check_noise(noise: Any) -> float:
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real):
        raise TypeError(f"noise: got {noise!r}; a number >= 0 is required.")
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(
            f"noise: got {noise!r}; it must be a finite number >= 0 "
            "(a fraction of each input's max - min, 0.2 in the SmoothGrad paper)."
        )
    return float(noise)


def check_baseline(baseline: Any) -> str | np.ndarray:
    if isinstance(baseline, str):
        if baseline != "zeros":
            raise ValueError(
                f"ig_baseline: got {baseline!r}; allowed are 'zeros' or a float scalar/array "
                "in model space. Fix: for 'black', pass the preprocessed image of 0 pixels "
                "(explain() does this when given a ModelSpec)."
            )
        return baseline
    try:
        array = np.asarray(baseline, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"ig_baseline: got {type(baseline).__name__}; 'zeros' or a float scalar/array "
            "is required."
        ) from error
    if not np.all(np.isfinite(array)):
        raise ValueError("ig_baseline: the baseline array has non-finite values.")
    if array.ndim > 3:
        raise ValueError(
            f"ig_baseline: got an array of shape {array.shape}; it must broadcast to one "
            "image [H, W, C] (a scalar, [C] or [H, W, C])."
        )
    return array


def check_images(x: Any, name: str = "x") -> np.ndarray:
    array = np.asarray(x)
    if array.ndim != 4:
        raise ValueError(f"{name}: got shape {array.shape}; a batch [B, H, W, C] is required.")
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name}: got dtype {array.dtype}; a numeric array is required.")
    return np.ascontiguousarray(array, dtype=np.float32)


def check_index_vector(name: str, values: Any, batch: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 0:
        array = np.full([batch], array)
    if array.shape != (batch,):
        raise ValueError(
            f"{name}: got shape {array.shape}; one value per image ({batch},) is required."
        )
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name}: got dtype {array.dtype}; integers are required.")
    return array.astype(np.int64)
