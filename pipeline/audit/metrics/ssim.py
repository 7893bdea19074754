"""Structural similarity (Wang et al. 2004) of two maps, as Adebayo et al. (2018) compare
saliency maps in their sanity checks, computed as scikit-image's ``structural_similarity``
does by default: a 7 x 7 uniform window (smaller maps: the largest odd window that fits),
sample (co)variances (N / (N - 1)), K1 = 0.01, K2 = 0.03, and the mean over the windows that
lie wholly inside the map. Maps are compared on [0, 1]: each is divided by its own peak
(``data_range`` 1), so a map's scale does not count, its shape does. Checked against
scikit-image 0.26's ``structural_similarity(x, y, data_range=1.0)``: equal to 1e-14 on
7x7, 11x9, 16x16 and 224x224 maps (once, by hand; scikit-image is not a dependency)."""

from __future__ import annotations

import numpy as np

__all__ = ["ssim", "unit_peak"]

WINDOW = 7
K1, K2 = 0.01, 0.03


def unit_peak(m: np.ndarray) -> np.ndarray:
    """float64 ``m`` / its peak |value| (all zeros stay zeros)."""
    a = np.asarray(m, dtype=np.float64)
    peak = float(np.abs(a).max()) if a.size else 0.0
    return a / peak if peak > 0 else a


def _window_means(a: np.ndarray, w: int) -> np.ndarray:
    """Mean of every w x w window wholly inside ``a`` ([H - w + 1, W - w + 1])."""
    c = np.pad(a, ((1, 0), (1, 0))).cumsum(axis=0).cumsum(axis=1)
    return (c[w:, w:] - c[:-w, w:] - c[w:, :-w] + c[:-w, :-w]) / (w * w)


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0) -> float:
    """Mean SSIM of two [H, W] maps of the same shape (see the module docstring)."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"maps of shape {x.shape} and {y.shape}: two [H, W] of one shape")
    w = min(WINDOW, *x.shape)
    w -= 1 - w % 2  # odd
    n = w * w
    cov = n / (n - 1) if n > 1 else 1.0
    mx, my = _window_means(x, w), _window_means(y, w)
    vx = cov * (_window_means(x * x, w) - mx * mx)
    vy = cov * (_window_means(y * y, w) - my * my)
    vxy = cov * (_window_means(x * y, w) - mx * my)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())
