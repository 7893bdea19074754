"""Gradient -> 2-D saliency maps (the seed notebook's views), and their normalisation.

Pure numpy: no TensorFlow, no Beam.

Views of a gradient ``g`` of shape [H, W, C] (model-input space), each a float32 [H, W]
map in [0, 1]:

``abs``
    ``sum_c |g|``: the usual saliency map (Simonyan et al. 2013).
``positive``
    ``sum_c max(g, 0)``: pixels whose increase raises the target score.
``negative``
    ``sum_c max(-g, 0)``: pixels whose increase lowers the target score.
``max``
    ``max_c |g|``: the channel-max variant from the paper.
``image_x_abs``
    ``mean_c (normalise(sum_c |g|)[..., None] * image / 255)``: the image weighted by its
    normalised ``abs`` map. For rendering, :func:`image_times_abs` keeps the colour
    version, an [H, W, C] float32 in [0, 1]; the 2-D view is its mean over channels. It is
    not normalised a second time (it is already in [0, 1]: dark pixels stay dark).

Normalisation rule (one rule for every view, see :func:`normalise`): non-finite values
count as 0 and negative values are clipped to 0; the map is clipped at its
``percentile``-th percentile (99 by default) and divided by that value, so the top 1 % of
pixels saturate at 1 and a single outlier cannot wash out the rest of the map. When the
percentile is 0 but the map is not all zero (a sparse map), the map is divided by its
maximum instead. An all-zero map stays all zero (never NaN).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.choices import DEFAULT_PERCENTILE, MAP_VIEWS

VIEWS = MAP_VIEWS


def _check_percentile(percentile: float) -> float:
    value = float(percentile)
    if not 0.0 < value <= 100.0:
        raise ValueError(
            f"percentile={percentile!r} is out of range: allowed is 0 < percentile <= 100 "
            "(99.0 clips the brightest 1% of pixels); pass a value in that range."
        )
    return value


def _clean(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float32)
    return np.maximum(np.where(np.isfinite(m), m, np.float32(0.0)), np.float32(0.0))


def scale_of(m: np.ndarray, percentile: float = DEFAULT_PERCENTILE) -> float:
    """The value :func:`normalise` maps to 1 (its percentile, or the maximum; 0 for an
    all-zero map): the scale a rendered view is labelled with."""
    p = _check_percentile(percentile)
    m = _clean(m)
    if m.size == 0:
        return 0.0
    scale = np.float32(np.percentile(m, p))
    return float(scale if scale > 0.0 else m.max())


def view_scales(gradient: np.ndarray, percentile: float = DEFAULT_PERCENTILE) -> dict[str, float]:
    """{"abs", "positive", "negative"}: each view's scale (see :func:`scale_of`), in
    gradient units: what 1 means on its colour bar."""
    g = _check_gradient(gradient)
    return {
        "abs": scale_of(np.abs(g).sum(axis=-1), percentile),
        "positive": scale_of(np.maximum(g, 0.0).sum(axis=-1), percentile),
        "negative": scale_of(np.maximum(-g, 0.0).sum(axis=-1), percentile),
    }


def normalise(m: np.ndarray, percentile: float = DEFAULT_PERCENTILE) -> np.ndarray:
    """Clip a non-negative map at its ``percentile``-th percentile and scale it to [0, 1].

    Non-finite entries count as 0 and negative entries are clipped to 0. If the percentile
    is 0 while the map has positive values, the maximum is used instead. An all-zero map
    gives zeros. Returns float32 of the input's shape.
    """
    p = _check_percentile(percentile)
    m = np.asarray(m, dtype=np.float32)
    m = np.where(np.isfinite(m), m, np.float32(0.0))
    m = np.maximum(m, np.float32(0.0))
    if m.size == 0:
        return m.astype(np.float32)
    scale = np.float32(np.percentile(m, p))
    if scale <= 0.0:
        scale = np.float32(m.max())
    if scale <= 0.0:
        return np.zeros_like(m, dtype=np.float32)
    return (np.minimum(m, scale) / scale).astype(np.float32)


def _check_gradient(gradient: np.ndarray) -> np.ndarray:
    g = np.asarray(gradient)
    if g.ndim != 3 or min(g.shape) == 0:
        raise ValueError(
            f"gradient has shape {g.shape}: expected a non-empty [H, W, C] array "
            "(one image, channels last); pass one image's gradient, not a batch."
        )
    if not np.issubdtype(g.dtype, np.floating):
        raise TypeError(f"gradient has dtype {g.dtype}: expected a float array (float16/32/64).")
    return g.astype(np.float32)


def _check_image(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[:2] != shape[:2] or img.shape[2] not in (1, shape[2]):
        raise ValueError(
            f"image has shape {np.asarray(image).shape}: expected [H, W, C] matching the "
            f"gradient's {tuple(shape)} (pixels 0..255 at the model-input size)."
        )
    return img.astype(np.float32) / np.float32(255.0)


def image_times_abs(
    gradient: np.ndarray, image: np.ndarray, *, percentile: float = DEFAULT_PERCENTILE
) -> np.ndarray:
    """The image (0..255) weighted by the normalised ``abs`` map: float32 [H, W, C] in [0, 1]."""
    g = _check_gradient(gradient)
    img = _check_image(image, g.shape)
    return _weighted(normalise(np.abs(g).sum(axis=-1), percentile), img)


def weight_image(abs_map: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The image (0..255, [H, W, C]) weighted by an already normalised ``abs`` map [H, W]:
    float32 [H, W, C] in [0, 1] (what :func:`image_times_abs` returns)."""
    weight = np.asarray(abs_map, dtype=np.float32)
    if weight.ndim != 2:
        raise ValueError(f"abs_map has shape {weight.shape}: expected a 2-D [H, W] map.")
    pixels = np.asarray(image)
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    return _weighted(weight, _check_image(pixels, weight.shape + (channels,)))


def _weighted(weight: np.ndarray, img: np.ndarray) -> np.ndarray:
    """[H, W] weights times a checked [H, W, C] image in [0, 1]."""
    return (np.asarray(weight, np.float32)[..., None] * img).astype(np.float32)


def compute_views(
    gradient: np.ndarray,
    image: np.ndarray | None = None,
    *,
    percentile: float = DEFAULT_PERCENTILE,
    views: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """The 2-D views of one gradient [H, W, C], each float32 [H, W] in [0, 1].

    ``image_x_abs`` is included only when ``image`` (0..255, [H, W, C]) is given.
    ``views`` selects a subset of :data:`VIEWS` (default: all that apply).
    """
    wanted = tuple(VIEWS if views is None else views)
    unknown = [v for v in wanted if v not in VIEWS]
    if unknown:
        raise ValueError(f"views={list(wanted)!r} has unknown {unknown!r}: allowed are {VIEWS}.")
    if "image_x_abs" in wanted and image is None and views is not None:
        raise ValueError("views asks for 'image_x_abs' but no image was given: pass image=.")
    g = _check_gradient(gradient)
    _check_percentile(percentile)
    out: dict[str, np.ndarray] = {}
    abs_sum = None
    if "abs" in wanted or ("image_x_abs" in wanted and image is not None):
        abs_sum = normalise(np.abs(g).sum(axis=-1), percentile)
    if "abs" in wanted:
        out["abs"] = abs_sum
    if "positive" in wanted:
        out["positive"] = normalise(np.maximum(g, 0.0).sum(axis=-1), percentile)
    if "negative" in wanted:
        out["negative"] = normalise(np.maximum(-g, 0.0).sum(axis=-1), percentile)
    if "max" in wanted:
        out["max"] = normalise(np.abs(g).max(axis=-1), percentile)
    if "image_x_abs" in wanted and image is not None:
        img = _check_image(image, g.shape)
        out["image_x_abs"] = (abs_sum[..., None] * img).mean(axis=-1).astype(np.float32)
    return out
