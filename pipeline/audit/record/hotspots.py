"""Shortcuts wherever they sit: a pattern the model looks at wherever it is in each image.

Per record (on the workers, in its row line): the map's **hotspots**, the HOTSPOTS square
windows of side HOTSPOT_FRACTION of the image holding the most relevance, each with what
sits there: the image's pixels in the window and half a window around it, resampled to at
most DESCRIPTOR_SIDE cells per window side and stored as uint8 (base64; the map itself,
peak-scaled, when the record has no image). Two hotspots are compared by the best cosine
over shifts of up to half a window of their patterns, each channel's mean removed, so a
tag, ruler or text stamp that moves from image to image matches itself in every image it
drives, and a flat patch of one colour matches nothing.

The per-class rule over them is audit/dataset/repeated_patterns.py.
"""

from __future__ import annotations

import base64

import numpy as np

HOTSPOT_FRACTION = 1 / 8  # window side / image side
DESCRIPTOR_SIDE = 7
HOTSPOTS = 3  # windows kept per map
FLOAT16_MAX = 65504.0


def window_sums(m: np.ndarray, side: int) -> np.ndarray:
    """Sum of ``m`` over every side x side window (top-left corners), by integral image."""
    c = np.pad(np.cumsum(np.cumsum(m, 0), 1), ((1, 0), (1, 0)))
    return c[side:, side:] - c[:-side, side:] - c[side:, :-side] + c[:-side, :-side]


def _resample(patch: np.ndarray, side: int) -> np.ndarray:
    """Means of ``patch`` [h, w, C] (h, w >= side) over a side x side grid of blocks whose
    edges are the whole pixels floor(k * h / side)."""
    h, w = patch.shape[:2]
    ys = (np.arange(side) * h) // side
    xs = (np.arange(side) * w) // side
    sums = np.add.reduceat(np.add.reduceat(patch, ys, axis=0), xs, axis=1)
    counts = np.diff(np.append(ys, h))[:, None] * np.diff(np.append(xs, w))[None, :]
    return sums / counts[..., None]


def encode_context(pixels: np.ndarray) -> str:
    """A context's pixels in [0, 1] as base64 uint8 (what a row line stores)."""
    return base64.b64encode(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)).decode()


def context_pixels(spot: dict) -> np.ndarray:
    """A hotspot's context as float [D, D, C] in [0, 1] (D = cells + 2 * (cells // 2))."""
    d = spot["cells"] + 2 * (spot["cells"] // 2)
    data = np.frombuffer(base64.b64decode(spot["context"]), np.uint8)
    return data.reshape(d, d, -1) / 255.0


def _side(h: int, w: int) -> int:
    return max(1, round(min(h, w) * HOTSPOT_FRACTION))


def pooled_features(features: np.ndarray, box: tuple[int, int, int, int], size: tuple):
    """The mean of ``features`` [h, w, C] over the cells a pixel box (y0, x0, y1, x1) of an
    image of ``size`` (H, W) overlaps (at least one cell)."""
    fh, fw = features.shape[:2]
    h, w = size
    y0, x0, y1, x1 = box
    a, b = int(y0 * fh // h), max(int(y0 * fh // h) + 1, -(-y1 * fh // h))
    c, d = int(x0 * fw // w), max(int(x0 * fw // w) + 1, -(-x1 * fw // w))
    return features[a:b, c:d].mean(axis=(0, 1))


def encode_features(vector: np.ndarray) -> str:
    """A pooled feature vector as base64 float16 (what a row line stores)."""
    finite = np.clip(np.nan_to_num(np.asarray(vector, np.float64)), -FLOAT16_MAX, FLOAT16_MAX)
    return base64.b64encode(finite.astype("<f2").tobytes()).decode()


def feature_vector(spot: dict) -> np.ndarray | None:
    """A hotspot's pooled model features as float64 [C], or None (no feature map)."""
    if not spot.get("features"):
        return None
    return np.frombuffer(base64.b64decode(spot["features"]), "<f2").astype(np.float64)


def hotspots(
    relevance_map: np.ndarray, image: np.ndarray | None, features: np.ndarray | None = None
) -> list[dict]:
    """The map's HOTSPOTS strongest windows, strongest first, each {"y", "x": its centre
    (fractions of the side), "share": its part of the map's relevance, "cells": the side
    of the descriptor grid, "context": the pixels of the window and half a window around
    it (edge-padded at the image's border), resampled to (cells + 2 * (cells // 2))^2 x C,
    base64 uint8 (:func:`context_pixels` reads it), and with ``features`` (the model's
    feature map [h, w, C] of the image, engine.features) "features": their mean over the
    cells the window covers, base64 float16 (:func:`feature_vector`)}. A window's
    neighbourhood (half a window around it) is taken out before the next is chosen.

    The context lets :func:`similarities` match two hotspots under shifts of up to half
    a window, so one pattern matches itself wherever the argmax window happened to start
    around it. Several windows per map: a shortcut beside the object need not be the
    strongest spot."""
    m = np.where(np.isfinite(relevance_map), relevance_map, 0.0).astype(np.float64)
    h, w = m.shape
    side = _side(h, w)
    total = float(m.sum())
    if image is None:
        source = m[..., None] / max(float(m.max()), 1e-12)
    else:
        source = np.asarray(image, np.float64) / (255.0 if image.dtype == np.uint8 else 1.0)
    cells = min(side, DESCRIPTOR_SIDE)
    margin = round((cells // 2) * side / cells)  # pixels of half a window, in whole cells
    padded = np.pad(source, ((margin, margin), (margin, margin), (0, 0)), mode="edge")
    left, spots = m.copy(), []
    for _ in range(HOTSPOTS):
        sums = window_sums(left, side)
        y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
        if sums[y, x] <= 0 and spots:
            break
        context = padded[y : y + side + 2 * margin, x : x + side + 2 * margin]
        spot = {
            "y": (y + side / 2) / h,
            "x": (x + side / 2) / w,
            "share": float(sums[y, x]) / total if total > 0 else 0.0,
            "cells": cells,
            "context": encode_context(_resample(context, cells + 2 * (cells // 2))),
        }
        if features is not None:
            box = (int(y), int(x), int(y) + side, int(x) + side)
            spot["features"] = encode_features(pooled_features(features, box, (h, w)))
        spots.append(spot)
        left[
            max(0, y - side // 2) : y + side + side // 2,
            max(0, x - side // 2) : x + side + side // 2,
        ] = 0
    return spots
