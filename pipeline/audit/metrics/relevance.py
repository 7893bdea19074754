"""The relevance map the audit metrics read: sum over channels of |gradient|."""

import numpy as np


def relevance(gradient: np.ndarray) -> np.ndarray:
    """float64 [H, W] = sum_c |g[..., c]| of a gradient [H, W, C] (or |g| of [H, W])."""
    g = np.asarray(gradient, dtype=np.float64)
    if g.ndim == 2:
        return np.abs(g)
    if g.ndim != 3:
        raise ValueError(f"gradient: got shape {g.shape}; [H, W, C] or [H, W] is required.")
    return np.abs(g).sum(axis=-1)


def check_map(m: np.ndarray, name: str = "map") -> np.ndarray:
    """A finite, non-negative float64 [H, W] map (non-finite entries count as 0)."""
    a = np.asarray(m, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name}: got shape {a.shape}; a non-empty [H, W] map is required.")
    a = np.where(np.isfinite(a), a, 0.0)
    if (a < 0).any():
        raise ValueError(f"{name}: has negative values; pass relevance(gradient) (|g| summed).")
    return a
