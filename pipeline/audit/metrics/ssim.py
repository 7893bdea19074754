"""Structural similarity (Wang et al. 2004) of two maps, as Adebayo et al. (2018) compare
saliency maps in their sanity checks: scikit-image's ``structural_similarity`` with its
defaults (a 7 x 7 uniform window; smaller maps: the largest odd window that fits; sample
(co)variances; K1 = 0.01, K2 = 0.03; the mean over the windows wholly inside the map).
Maps are compared on [0, 1]: each is divided by its own peak (``data_range`` 1), so a map's
scale does not count, its shape does."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

__all__ = ["ssim", "unit_peak"]

WINDOW = 7


def unit_peak(m: np.ndarray) -> np.ndarray:
    """float64 ``m`` / its peak |value| (all zeros stay zeros)."""
    a = np.asarray(m, dtype=np.float64)
    peak = float(np.abs(a).max()) if a.size else 0.0
    return a / peak if peak > 0 else a


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0) -> float:
    """Mean SSIM of two [H, W] maps of the same shape (see the module docstring)."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"maps of shape {x.shape} and {y.shape}: two [H, W] of one shape")
    w = min(WINDOW, *x.shape)
    w -= 1 - w % 2  # odd
    # a 1 x 1 window (maps under 3 pixels a side) has no sample covariance: the population's
    return float(structural_similarity(x, y, win_size=w, data_range=data_range,
                                       use_sample_covariance=w > 1))  # fmt: skip
