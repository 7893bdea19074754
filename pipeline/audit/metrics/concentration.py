"""How concentrated a map is: Gini (sparseness) and entropy (complexity).

Gini as in Chalasani et al. 2020 / Quantus Sparseness: 0 for a uniform map, 1 - 1/n for a
single pixel. Entropy as in Bhatt et al. 2020 / Quantus Complexity: the Shannon entropy of
the map as a distribution; ``normalised`` divides by log(n), so uniform = 1, one pixel = 0.
An all-zero map has Gini 0 and entropy 0 (there is nothing to concentrate).
"""

import numpy as np

from pipeline.audit.metrics.relevance import check_map


def gini(m: np.ndarray) -> float:
    """Gini index of the map's values (sorted ascending, 1-indexed ranks)."""
    a = np.sort(check_map(m).ravel())
    total = a.sum()
    if total <= 0:
        return 0.0
    n = a.size
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return float(2.0 * (ranks * a).sum() / (n * total) - (n + 1.0) / n)


def entropy(m: np.ndarray, *, normalised: bool = True) -> float:
    """Shannon entropy (natural log) of map / sum(map); divided by log(n) when normalised."""
    a = check_map(m).ravel()
    total = a.sum()
    if total <= 0 or a.size < 2:
        return 0.0
    p = a[a > 0] / total
    h = float(-(p * np.log(p)).sum())
    return h / float(np.log(a.size)) if normalised else h
