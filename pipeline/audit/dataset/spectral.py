"""The spectral part of SpRAy: a symmetric kNN graph and the smallest eigenpairs of its
normalised Laplacian L = I - D^-1/2 A D^-1/2, numpy only.

Up to DENSE_LIMIT points the graph is a dense matrix and ``numpy.linalg.eigh`` solves it
(exact; O(n^2) memory, O(n^3) time). Beyond, the graph is kept as edge lists (O(n k)),
the neighbours are found in row chunks, connected components are labelled directly (the
null space of L is spanned by D^1/2 times their indicators, which a single-vector Krylov
method would not resolve), and a connected graph's eigenpairs come from Lanczos with full
reorthogonalisation on D^-1/2 A D^-1/2: 10,000 maps in seconds instead of minutes.
"""

import numpy as np

DENSE_LIMIT = 2000
COMPONENT_EIGENVALUE = 1e-6  # Laplacian eigenvalues below this count connected components
_CHUNK = 1024  # rows of the distance matrix computed at once (8 MB per 1,000 columns)


def _nearest(features: np.ndarray, neighbours: int) -> np.ndarray:
    """int [n, k]: each point's k nearest others (Euclidean), in row chunks."""
    n = len(features)
    k = max(1, min(neighbours, n - 1))
    sq = (features**2).sum(axis=1)
    out = np.empty((n, k), np.int64)
    for start in range(0, n, _CHUNK):
        rows = slice(start, min(start + _CHUNK, n))
        dist = sq[rows, None] + sq[None, :] - 2.0 * features[rows] @ features.T
        dist[np.arange(dist.shape[0]), np.arange(rows.start, rows.stop)] = np.inf
        out[rows] = np.argpartition(dist, k - 1, axis=1)[:, :k]
    return out


def knn_graph(features: np.ndarray, neighbours: int) -> np.ndarray:
    """Symmetric binary kNN adjacency [n, n] (no self loops), dense."""
    n = len(features)
    nearest = _nearest(features, neighbours)
    graph = np.zeros((n, n))
    graph[np.repeat(np.arange(n), nearest.shape[1]), nearest.ravel()] = 1.0
    return np.maximum(graph, graph.T)


def knn_edges(features: np.ndarray, neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols): every edge of the symmetric kNN graph, both directions, once each."""
    n = len(features)
    nearest = _nearest(features, neighbours)
    i = np.repeat(np.arange(n), nearest.shape[1])
    j = nearest.ravel()
    codes = np.unique(np.concatenate([i * n + j, j * n + i]))
    return codes // n, codes % n


def components(rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    """int [n]: connected-component id of each node, ids 0.. by first node."""
    labels = np.arange(n)
    while True:  # each node takes its neighbours' smallest label, then pointer jumping
        low = labels.copy()
        np.minimum.at(low, rows, labels[cols])
        low = low[low]
        if np.array_equal(low, labels):
            break
        labels = low
    _, ids = np.unique(labels, return_inverse=True)
    return ids


def dense_eigen(graph: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` smallest eigenvalues of L and their eigenvectors [n, count]."""
    degree = graph.sum(axis=1)
    inv = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-12)), 0.0)
    laplacian = np.eye(len(graph)) - inv[:, None] * graph * inv[None, :]
    values, vectors = np.linalg.eigh(laplacian)
    return values[:count], vectors[:, :count]


def _lanczos_top(matvec, n: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` largest eigenpairs of a symmetric operator (full reorthogonalisation)."""
    steps = min(n, max(200, 25 * count))
    basis = np.zeros((steps, n))
    alpha, beta = np.zeros(steps), np.zeros(steps)
    v = np.random.default_rng(seed).normal(size=n)
    v /= np.linalg.norm(v)
    used = steps
    for m in range(steps):
        basis[m] = v
        w = matvec(v)
        alpha[m] = w @ v
        w -= basis[: m + 1].T @ (basis[: m + 1] @ w)  # twice is enough (Kahan)
        w -= basis[: m + 1].T @ (basis[: m + 1] @ w)
        beta[m] = np.linalg.norm(w)
        if beta[m] < 1e-10:  # an invariant subspace: the spectrum seen is exact
            used = m + 1
            break
        v = w / beta[m]
    tri = np.diag(alpha[:used]) + np.diag(beta[: used - 1], 1) + np.diag(beta[: used - 1], -1)
    values, ritz = np.linalg.eigh(tri)
    top = np.argsort(-values)[:count]
    return values[top], basis[:used].T @ ritz[:, top]


def sparse_eigen(
    rows: np.ndarray, cols: np.ndarray, n: int, count: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """As dense_eigen, from the graph's edge lists (see the module docstring)."""
    degree = np.bincount(rows, minlength=n).astype(np.float64)
    inv = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-12)), 0.0)
    ids = components(rows, cols, n)
    found = int(ids.max()) + 1
    if found > 1:  # the null space: D^1/2 times each component's indicator, largest first
        sizes = np.bincount(ids)
        order = np.argsort(-sizes, kind="stable")[:count]
        vectors = np.zeros((n, len(order)))
        for column, c in enumerate(order):
            inside = ids == c
            vectors[inside, column] = np.sqrt(degree[inside])
            vectors[:, column] /= np.linalg.norm(vectors[:, column]) or 1.0
        return np.zeros(len(order)), vectors
    weight = inv[rows] * inv[cols]

    def matvec(v: np.ndarray) -> np.ndarray:
        return np.bincount(rows, weights=weight * v[cols], minlength=n)

    values, vectors = _lanczos_top(matvec, n, count, seed)
    return 1.0 - values, vectors


def laplacian_eigen(
    features: np.ndarray, neighbours: int, count: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` smallest eigenpairs of the kNN graph's normalised Laplacian."""
    n = len(features)
    if n <= DENSE_LIMIT:
        return dense_eigen(knn_graph(features, neighbours), count)
    rows, cols = knn_edges(features, neighbours)
    return sparse_eigen(rows, cols, n, count, seed)
