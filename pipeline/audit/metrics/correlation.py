"""Rank correlation of two maps: Spearman's rho with average ranks for ties (SciPy's
``spearmanr``). Sparse maps (guided backprop's exact zeros) hold large tied blocks: ranking
ties by position instead would let the order of the pixels decide the correlation."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata, spearmanr

__all__ = ["average_ranks", "spearman"]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """float64 ranks 1..n of the flattened ``values``; tied values share the mean of the
    ranks they span ([10, 20, 20, 30] -> [1, 2.5, 2.5, 4])."""
    return rankdata(np.ravel(np.asarray(values)), method="average").astype(np.float64)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two maps of the same size. 0.0 when either map is constant (no
    order to correlate; SciPy says nan)."""
    x, y = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    if x.size != y.size:
        raise ValueError(f"maps of {x.size} and {y.size} values: the same size is required")
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    return float(spearmanr(x, y).statistic)
