"""Strategy discovery per class: SpRAy (Lapuschkin et al. 2019), made robust to where the
object sits.

Published SpRAy clusters the class's maps, downsampled and normalised, with spectral
clustering on a kNN graph (eigengap for k). Where the object moves from image to image it
then groups maps by the object's position, not by the model's strategy. Here each map is
described by two parts, concatenated (``describe``):

- its shape, translation-invariant: the magnitude of its 2-D Fourier transform (the same
  for a blob wherever it sits);
- its *stationary* attention: the map weighted by the class's mean map, normalised to a
  peak of 1. A spot the model attends at the same place in many images (a watermark, a
  border, a corner mark) is bright in the mean map and keeps its weight; attention that
  follows a moving object spreads over the mean map and is damped.

``mode="raw"`` gives published SpRAy (the downsampled map itself), for comparison.

The clustering: a symmetric kNN graph on Euclidean distances (binary weights), the
symmetric normalised Laplacian L = I - D^-1/2 A D^-1/2, its smallest eigenvalues, k at the
number of connected components when the graph falls apart into several (each strategy its
own component, as the aligned descriptor gives for a planted shortcut), else at the largest
gap among the first ``max_clusters`` (published SpRAy's eigengap), k-means
(scikit-learn's, k-means++ seeding, fixed seed) on the row-normalised first k eigenvectors.
Prototypes are the members' mean maps. audit/dataset/spectral.py: dense up to 2,000 maps,
sparse and ARPACK beyond; callers still cap n with a per-class reservoir.
"""

import dataclasses

import numpy as np
from sklearn.cluster import KMeans

from pipeline.audit.dataset.spectral import COMPONENT_EIGENVALUE, laplacian_eigen

MODES = ("aligned", "raw")
DEFAULT_NEIGHBOURS = 10
DEFAULT_MAX_CLUSTERS = 8


@dataclasses.dataclass(frozen=True)
class Strategies:
    """The clusters of one class's maps."""

    labels: np.ndarray  # int [n]: cluster of each map, clusters sorted by size (0 largest)
    k: int
    eigenvalues: np.ndarray  # the smallest Laplacian eigenvalues (max_clusters + 1)
    eigengap: float  # eigenvalues[k] - eigenvalues[k - 1]
    prototypes: np.ndarray  # [k, size, size]: each cluster's mean (downsampled) map
    sizes: tuple[int, ...]


def shape_descriptor(maps: np.ndarray) -> np.ndarray:
    """float64 [n, s * s]: |2-D FFT| of each map, the same wherever the pattern sits."""
    x = np.asarray(maps, dtype=np.float64)
    return np.abs(np.fft.fft2(x)).reshape(len(x), -1)


def describe(maps: np.ndarray, *, mode: str = "aligned") -> np.ndarray:
    """float64 [n, d] descriptors of downsampled, sum-normalised maps [n, s, s]."""
    if mode not in MODES:
        raise ValueError(f"mode: got {mode!r}; one of {list(MODES)} is required.")
    x = np.asarray(maps, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    if mode == "raw":
        return flat
    shape = shape_descriptor(x)
    mean = x.mean(axis=0)
    stationary = (x * (mean / mean.max() if mean.max() > 0 else mean)).reshape(len(x), -1)
    # Both parts on one scale: each row of each part has unit norm on average.
    parts = [p / (np.linalg.norm(p, axis=1).mean() or 1.0) for p in (shape, stationary)]
    return np.concatenate(parts, axis=1)


def _kmeans(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """scikit-learn's k-means (k-means++ seeding, the best of 4 seeded starts)."""
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(points).astype(np.int64)


def discover(
    maps: np.ndarray,
    *,
    mode: str = "aligned",
    neighbours: int = DEFAULT_NEIGHBOURS,
    max_clusters: int = DEFAULT_MAX_CLUSTERS,
    seed: int = 0,
) -> Strategies:
    """Cluster one class's downsampled maps [n, s, s] (see ``downsample``)."""
    x = np.asarray(maps, dtype=np.float64)
    n = len(x)
    if x.ndim != 3 or n < 2:
        raise ValueError(f"maps: got shape {x.shape}; at least two [s, s] maps are required.")
    count = min(max_clusters + 1, n)
    values, vectors = laplacian_eigen(describe(x, mode=mode), neighbours, count, seed)
    gaps = np.diff(values)
    components = int((values < COMPONENT_EIGENVALUE).sum())
    if components > 1:  # the graph falls apart: one cluster per connected component
        k = min(components, max_clusters)
    else:  # published SpRAy: the largest gap among the first max_clusters eigenvalues
        k = int(np.argmax(gaps[: max(1, count - 1)]) + 1)
    embedding = vectors[:, :k]
    norms = np.linalg.norm(embedding, axis=1, keepdims=True)
    labels = (
        _kmeans(embedding / np.where(norms > 0, norms, 1.0), k, seed)
        if k > 1
        else (np.zeros(n, np.int64))
    )
    order = np.argsort([-(labels == j).sum() for j in range(k)], kind="stable")
    relabel = np.empty(k, np.int64)
    relabel[order] = np.arange(k)
    labels = relabel[labels]
    prototypes = np.stack([x[labels == j].mean(axis=0) for j in range(k)])
    return Strategies(
        labels=labels,
        k=k,
        eigenvalues=values,
        eigengap=float(gaps[k - 1]) if k - 1 < len(gaps) else 0.0,
        prototypes=prototypes,
        sizes=tuple(int((labels == j).sum()) for j in range(k)),
    )
