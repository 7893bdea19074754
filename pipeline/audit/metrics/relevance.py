"""The relevance map the audit metrics read: sum over channels of |gradient|, and its
area-averaged thumbnail."""

import numpy as np

DEFAULT_SIZE = 16  # maps are compared at 16 x 16


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


def downsample(m: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Area-average a map to size x size (any input size), normalised to sum 1."""
    a = check_map(m)
    rows = np.linspace(0, a.shape[0], size + 1)
    cols = np.linspace(0, a.shape[1], size + 1)
    # Fractional-overlap weights: out = Wr @ a @ Wc^T, each input pixel split between bins.
    out = _bins(rows, a.shape[0]) @ a @ _bins(cols, a.shape[1]).T
    total = out.sum()
    return out / total if total > 0 else out


def _bins(edges: np.ndarray, n: int) -> np.ndarray:
    starts = np.arange(n, dtype=np.float64)
    lo = np.maximum(edges[:-1, None], starts[None, :])
    hi = np.minimum(edges[1:, None], starts[None, :] + 1.0)
    return np.clip(hi - lo, 0.0, None)
