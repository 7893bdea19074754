"""explain(): saliency for a batch in one call, right on any Keras classifier, fast on
every call.

- A softmax head in any form is stripped (engine.heads): maps and ``scores`` are taken at
  the logits; ``Explanation.softmax_stripped`` says what was stripped.
- The Explainer, with its folded / guided / cast variants and compiled functions, is kept
  per (model object, settings) in a cache that holds the model only weakly: dropping the
  model frees its entry. Variants that share the model's variables are always current;
  for the weights an Explainer copied (a stripped softmax layer, a kept BatchNorm fold, the
  guided and cast clones) each call compares a checksum (one compiled reduction: 2 ms for
  all of MobileNetV2, nothing when nothing was copied), so a model trained or re-weighted
  between calls gets a fresh Explainer, never stale copies of old weights.
- A ModelSpec or name is loaded once per spec (a small LRU of loaded models).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import weakref
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipeline.choices import (
    DEFAULT_IG_BASELINE,
    DEFAULT_IG_STEPS,
    DEFAULT_NOISE,
    DEFAULT_PRECISION,
    DEFAULT_SAMPLE_BATCH_SIZE,
    DEFAULT_SAMPLES,
    DEFAULT_SEED,
)
from pipeline.engine.checks import check_images, check_method
from pipeline.engine.explainer import Explainer, Explanation
from pipeline.engine.models import LoadedModel, ModelSpec, load_model
from pipeline.engine.targets import resolve_targets

__all__ = ["cache_info", "clear_cache", "explain"]

_LOG = logging.getLogger(__name__)
_LOADED_MODELS = 2  # ModelSpec -> LoadedModel entries kept

_lock = threading.Lock()
# model -> {settings: _Entry}; weak keys, so the cache never keeps a model alive.
_cache: weakref.WeakKeyDictionary[keras.Model, dict[tuple, _Entry]] = weakref.WeakKeyDictionary()


class _Entry:
    """A cached Explainer, and a checksum of the weights it copied (as they were)."""

    def __init__(self, explainer: Explainer) -> None:
        self.explainer = explainer
        self.watched: tuple[int, ...] = ()
        self.checksum: _Checksum | None = None
        self.value = np.zeros([0], np.float32)

    def stale(self) -> bool:
        """Whether a weight the Explainer copied has changed since it was copied."""
        return self.checksum is not None and not np.array_equal(self.checksum(), self.value)

    def watch(self) -> None:
        """After a call: checksum the copied weights (when the set of copies changed)."""
        copied = self.explainer.copied_weights()
        ids = tuple(id(v) for v in copied)
        if ids != self.watched:
            self.watched = ids
            self.checksum = _Checksum(copied) if copied else None
            self.value = self.checksum() if copied else np.zeros([0], np.float32)


class _Checksum:
    """Per-variable sums of w and of w**2 in one compiled call (2 ms for all 3.5M weights of
    MobileNetV2 on 2 CPU cores; a float64 weighted sum took 4.7 ms): a training step or
    set_weights changes them. Holds variables, never the model."""

    def __init__(self, weights: list) -> None:
        variables = [v.value if hasattr(v, "value") else v for v in weights]

        def sums() -> tf.Tensor:
            first = [tf.reduce_sum(tf.cast(v, tf.float32)) for v in variables]
            second = [tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables]
            return tf.stack(first + second)

        self._sums = tf.function(sums, autograph=False)

    def __call__(self) -> np.ndarray:
        return self._sums().numpy()


def _settings_key(**settings: Any) -> tuple:
    key = []
    for name, value in sorted(settings.items()):
        if isinstance(value, np.ndarray):  # an IG baseline array
            value = ("array", value.shape, hashlib.sha256(value.tobytes()).hexdigest())
        key.append((name, value))
    return tuple(key)


def _cached_entry(model: keras.Model, **settings: Any) -> _Entry:
    key = _settings_key(**settings)
    with _lock:
        entry = _cache.setdefault(model, {}).get(key)
    if entry is not None and not entry.stale():
        return entry
    if entry is not None:
        _LOG.info("model %r: its weights changed since the last call; rebuilding", model.name)
    entry = _Entry(Explainer(model, **settings))
    with _lock:
        _cache.setdefault(model, {})[key] = entry
    return entry


def clear_cache() -> None:
    """Drop every cached Explainer and loaded model (frees their memory now)."""
    with _lock:
        _cache.clear()
    _load.cache_clear()


def cache_info() -> dict[str, int]:
    """How many models and Explainers the cache holds (for tests and debugging)."""
    with _lock:
        return {
            "models": len(_cache),
            "explainers": sum(len(v) for v in _cache.values()),
            "loaded_specs": _load.cache_info().currsize,
        }


@functools.lru_cache(maxsize=_LOADED_MODELS)
def _load(spec: ModelSpec) -> LoadedModel:
    return load_model(spec)


def explain(
    model: Any,
    images: Any,
    method: str,
    *,
    targets: Any = None,
    samples: int = DEFAULT_SAMPLES,
    noise: float = DEFAULT_NOISE,
    seed: int = DEFAULT_SEED,
    precision: str = DEFAULT_PRECISION,
    batch_size: int = DEFAULT_SAMPLE_BATCH_SIZE,
    ig_steps: int = DEFAULT_IG_STEPS,
    ig_baseline: str | float | np.ndarray = DEFAULT_IG_BASELINE,
    gradcam_layer: str = "",
) -> Explanation:
    """Explain a batch in one call.

    ``model`` is a keras.Model classifier (images are fed as they are, in model space; a
    softmax head is stripped), or a ``ModelSpec`` or a model name/path (then the model is
    loaded once, images are raw pixels 0..255 [B, H, W, C] at its input size, and its
    preprocessing is applied). ``targets`` None explains each image's predicted class.
    ``ig_baseline`` "black" (the preprocessed image of 0 pixels) needs a ModelSpec or name.
    ``gradcam_layer`` names the layer whose feature maps Grad-CAM weights ("" the last one
    with a spatial 4-D output). Repeated calls with the same model object and settings
    reuse one Explainer.
    """
    method = check_method(method)
    if isinstance(model, keras.Model):
        x = check_images(images, "images")
        if isinstance(ig_baseline, str) and ig_baseline == "black":
            raise ValueError(
                "ig_baseline: 'black' needs the model's preprocessing; for a keras.Model pass "
                "the preprocessed black image as an array, or pass a ModelSpec."
            )
        keras_model = model
    else:
        keras_model, x, ig_baseline = _load_and_preprocess(model, images, ig_baseline)
    entry = _cached_entry(
        keras_model,
        samples=samples,
        noise=noise,
        seed=seed,
        precision=precision,
        batch_size=batch_size,
        ig_steps=ig_steps,
        ig_baseline=ig_baseline,
        gradcam_layer=gradcam_layer,
    )
    explainer = entry.explainer
    if targets is None:
        _, targets = resolve_targets(explainer.logits(x), "predicted")
    result = explainer.explain(x, method, targets=targets)
    entry.watch()  # copies made by this call are of the weights as they are now
    return result


def _load_and_preprocess(spec: Any, images: Any, ig_baseline: Any):
    if isinstance(spec, str):
        spec = ModelSpec(name=spec)
    if not isinstance(spec, ModelSpec):
        raise TypeError(
            f"model: got {type(spec).__name__}; a keras.Model, a ModelSpec or a model "
            "name/path is required."
        )
    loaded = _load(spec)
    pixels = check_images(images, "images")
    expected = (*loaded.input_size, loaded.channels)
    if pixels.shape[1:] != expected:
        raise ValueError(
            f"images: got shape {pixels.shape}; raw pixels [B, {expected[0]}, {expected[1]}, "
            f"{expected[2]}] at the model's input size are required. Fix: resize first."
        )
    x = np.asarray(loaded.preprocess(pixels), dtype=np.float32)
    if isinstance(ig_baseline, str) and ig_baseline == "black":
        ig_baseline = loaded.black_image()
    return loaded.model, x, ig_baseline
