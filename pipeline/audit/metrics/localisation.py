"""Does the map point at the object? Pointing game, energy in box, relevance rank accuracy.

Boxes are [ymin, xmin, ymax, xmax] with max exclusive. Annotations give them in the
ORIGINAL image's pixels (or normalised, as TFDS ``objects/bbox``); ``map_boxes`` carries
them through the configured resize policy (store.decode.source_box, the very box the
decoder resamples) into model-input coordinates. A pixel belongs to a box when its centre
(r + 0.5, c + 0.5) lies inside it.

- pointing game (Zhang et al. 2018): the map's maximum lies in a box;
- energy in box (relevance mass accuracy, Arras et al. 2022): mass in the boxes / total;
- relevance rank accuracy (Arras et al. 2022): of the K highest pixels, K = the boxes'
  pixel count, the fraction inside the boxes.
"""

from collections.abc import Sequence

import numpy as np

from pipeline.audit.metrics.relevance import check_map
from pipeline.store.resize import source_box

Box = Sequence[float]


def check_boxes(boxes: Sequence[Box], name: str = "boxes") -> np.ndarray:
    """float64 [N, 4] of (ymin, xmin, ymax, xmax) with min <= max."""
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4))
    if not np.all(np.isfinite(array)) or np.any(array[:, 2:] < array[:, :2]):
        raise ValueError(
            f"{name}: got {np.asarray(boxes).tolist()}; each box is [ymin, xmin, ymax, xmax] "
            "with ymin <= ymax and xmin <= xmax."
        )
    return array


def from_normalised(boxes: Sequence[Box], original: tuple[int, int]) -> np.ndarray:
    """Normalised boxes (TFDS ``objects/bbox``, in [0, 1]) -> original pixel coordinates."""
    h, w = original
    return check_boxes(boxes) * np.array([h, w, h, w], dtype=np.float64)


def map_boxes(
    boxes: Sequence[Box], original: tuple[int, int], size: tuple[int, int], policy: str
) -> np.ndarray:
    """Original-image boxes -> model-input boxes for ``resize(policy)`` to (height, width)
    ``size``; clipped to the model input (a box cropped away becomes empty)."""
    array = check_boxes(boxes)
    left, top, right, bottom = source_box(original, size, policy)
    sy, sx = size[0] / (bottom - top), size[1] / (right - left)
    out = (array - np.array([top, left, top, left])) * np.array([sy, sx, sy, sx])
    return np.clip(out, 0.0, np.array([size[0], size[1], size[0], size[1]], np.float64))


def box_mask(boxes: Sequence[Box], shape: tuple[int, int]) -> np.ndarray:
    """bool [H, W]: pixels whose centre lies in any box (model-input coordinates)."""
    ys = np.arange(shape[0], dtype=np.float64)[:, None] + 0.5
    xs = np.arange(shape[1], dtype=np.float64)[None, :] + 0.5
    mask = np.zeros(shape, dtype=bool)
    for ymin, xmin, ymax, xmax in check_boxes(boxes):
        mask |= (ys >= ymin) & (ys < ymax) & (xs >= xmin) & (xs < xmax)
    return mask


def _check_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"mask: got shape {mask.shape}; the map's {shape} is required.")
    return mask


def pointing_game(m: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the map's maximum (first in row-major order) lies in the mask; False for an
    all-zero map (it points nowhere)."""
    a = check_map(m)
    mask = _check_mask(mask, a.shape)
    if a.max() <= 0:
        return False
    return bool(mask.ravel()[int(np.argmax(a))])


def energy_in_box(m: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the map's mass inside the mask (0 for an all-zero map)."""
    a = check_map(m)
    mask = _check_mask(mask, a.shape)
    total = a.sum()
    return float(a[mask].sum() / total) if total > 0 else 0.0


def rank_accuracy(m: np.ndarray, mask: np.ndarray) -> float:
    """Of the K highest pixels (K = mask size; ties broken by row-major order), the
    fraction inside the mask; 0 for an empty mask or an all-zero map."""
    a = check_map(m)
    mask = _check_mask(mask, a.shape)
    k = int(mask.sum())
    if k == 0 or a.max() <= 0:
        return 0.0
    order = np.argsort(-a.ravel(), kind="stable")[:k]
    return float(mask.ravel()[order].mean())


def localisation_metrics(m: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The three localisation metrics of one map, flat (for a rows.jsonl row)."""
    return {
        "pointing": float(pointing_game(m, mask)),
        "energy_in_box": energy_in_box(m, mask),
        "rank_accuracy": rank_accuracy(m, mask),
    }
