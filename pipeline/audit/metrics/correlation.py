"""Rank correlation of two maps: Spearman's rho with average ranks for ties (the textbook
definition, as scipy.stats.spearmanr computes it). Sparse maps (guided backprop's exact
zeros) hold large tied blocks: ranking ties by position instead would let the order of the
pixels decide the correlation."""

from __future__ import annotations

import numpy as np

__all__ = ["average_ranks", "spearman"]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """float64 ranks 1..n of the flattened ``values``; tied values share the mean of the
    ranks they span ([10, 20, 20, 30] -> [1, 2.5, 2.5, 4])."""
    flat = np.ravel(np.asarray(values))
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]] if flat.size else np.zeros(0, bool)
    first = np.flatnonzero(starts)
    counts = np.diff(np.r_[first, flat.size])
    mean_rank = first + (counts + 1) / 2.0  # 1-based mean of first+1 .. first+count
    ranks = np.empty(flat.size, np.float64)
    ranks[order] = np.repeat(mean_rank, counts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two maps of the same size: the Pearson correlation of their average
    ranks. 0.0 when either map is constant (no order to correlate: scipy says nan)."""
    ra, rb = average_ranks(a), average_ranks(b)
    if ra.size != rb.size:
        raise ValueError(f"maps of {ra.size} and {rb.size} values: the same size is required")
    ra -= ra.mean()
    rb -= rb.mean()
    scale = np.sqrt((ra @ ra) * (rb @ rb))
    return float((ra @ rb) / scale) if scale > 0 else 0.0
