"""Strategy discovery (SpRAy) on synthetic map sets where the object moves from image to
image and part of the maps attend a fixed corner mark (a planted shortcut)."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.audit.dataset import spectral
from pipeline.audit.dataset import strategies as S
from pipeline.audit.metrics.relevance import downsample
from pipeline.testing.audit_data import synthetic_class


def _class_maps(seed, *, shortcut=0.3):
    _, maps, planted = synthetic_class(seed, shortcut=shortcut)
    return maps, planted


def _rand_index(a, b):
    iu = np.triu_indices(len(a), 1)
    return float(((a[:, None] == a[None, :])[iu] == (b[:, None] == b[None, :])[iu]).mean())


def test_downsample_is_an_area_average_normalised_to_one():
    m = np.arange(16, dtype=float).reshape(4, 4)
    got = downsample(m, size=2)
    blocks = np.array([[2.5, 4.5], [10.5, 12.5]])  # 2 x 2 block means
    np.testing.assert_allclose(got, blocks / blocks.sum())
    odd = downsample(np.ones((5, 7)), size=3)
    np.testing.assert_allclose(odd, np.full((3, 3), 1 / 9))  # fractional bins, same area


def test_the_knn_graph_is_symmetric_and_components_set_k():
    features = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    graph = spectral.knn_graph(features, 2)
    np.testing.assert_array_equal(graph, graph.T)
    assert graph[:3, 3:].sum() == 0  # two components
    maps = np.stack([np.eye(4)] * 3 + [np.ones((4, 4)) / 16] * 3) / 4
    found = S.discover(maps, neighbours=2, mode="raw")
    assert found.k == 2 and found.sizes == (3, 3)
    np.testing.assert_array_equal(found.labels[:3], found.labels[0])


@pytest.mark.parametrize(("seed", "fraction"), [(0, 0.3), (1, 0.3), (0, 0.15), (3, 0.15)])
def test_the_planted_shortcut_is_its_own_cluster_wherever_the_object_sits(seed, fraction):
    maps, planted = _class_maps(seed, shortcut=fraction)
    found = S.discover(maps)
    assert found.k == 2
    assert _rand_index(found.labels, planted) == 1.0  # exactly the marked maps
    shortcut = int(found.labels[planted][0])
    prototype = found.prototypes[shortcut]
    corner = prototype[:4, :4].sum()  # the mark's quarter-of-a-side corner
    assert corner > 0.3 and found.prototypes[1 - shortcut][:4, :4].sum() < 0.05


def test_published_spray_groups_by_where_the_object_sits():
    # The failure mode the aligned descriptor fixes, on the same data: raw maps split the
    # class by object position (more clusters, the planted maps not recovered).
    maps, planted = _class_maps(0, shortcut=0.3)
    raw = S.discover(maps, mode="raw")
    assert raw.k > 2 and _rand_index(raw.labels, planted) < 0.9


def test_the_sparse_eigensolver_equals_the_dense_one():
    _, maps, _ = synthetic_class(1, n=600)
    features = S.describe(maps)
    dense_values, dense_vectors = spectral.dense_eigen(spectral.knn_graph(features, 10), 9)
    rows, cols = spectral.knn_edges(features, 10)
    values, vectors = spectral.sparse_eigen(rows, cols, 600, 9)
    np.testing.assert_allclose(values, dense_values, atol=1e-9)
    overlap = np.linalg.svd(dense_vectors.T @ vectors, compute_uv=False)
    np.testing.assert_allclose(overlap, 1.0, atol=1e-6)  # the same eigenspace
    # A graph in pieces: the null space is the components' (degree-weighted) indicators.
    rows, cols = np.array([0, 1, 2, 3, 3, 4]), np.array([1, 0, 3, 2, 4, 3])
    assert spectral.components(rows, cols, 5).tolist() == [0, 0, 1, 1, 1]
    values, vectors = spectral.sparse_eigen(rows, cols, 5, 3)
    assert values.tolist() == [0.0, 0.0]
    assert (vectors[:2, 0] == 0).all() and (vectors[2:, 0] > 0).all()  # larger piece first


def test_ten_thousand_maps_go_through_the_sparse_path_and_find_the_mark():
    _, maps, planted = synthetic_class(2, shortcut=0.3, n=10_000)
    assert len(maps) > spectral.DENSE_LIMIT
    found = S.discover(maps)
    assert found.k == 2
    np.testing.assert_array_equal(found.labels == 1, planted)  # the marked maps, exactly


def test_the_libraries_find_the_strategies_the_hand_written_numerics_found():
    """tests/data/strategies_before.json: discover() with this project's own kNN graph,
    Lanczos solver and k-means (before scikit-learn's and SciPy's replaced them) on six
    synthetic classes. The same k and eigenvalues everywhere; the same clusters wherever
    a shortcut was planted (without one, k = 8 splits noise, which any k-means cuts its
    own way: there the partitions agree to an adjusted Rand index of 0.9)."""
    from sklearn.metrics import adjusted_rand_score

    for case in json.loads((Path(__file__).parent / "data/strategies_before.json").read_text()):
        _, maps, _ = synthetic_class(case["seed"], shortcut=case["shortcut"],
                                     border=case["border"], n=case["n"])  # fmt: skip
        found = S.discover(maps)
        assert found.k == case["k"], case["seed"]
        np.testing.assert_allclose(found.eigenvalues, case["eigenvalues"], atol=1e-7)
        agreement = adjusted_rand_score(case["labels"], found.labels)
        assert agreement == 1.0 if case["shortcut"] else agreement > 0.85, (case, agreement)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_a_class_of_two_to_four_maps_still_gets_its_graph(n):
    _, maps, _ = synthetic_class(9, n=n)
    found = S.discover(maps)
    assert found.k >= 1 and len(found.labels) == n
    graph = spectral.knn_graph(S.describe(maps), 10)
    assert graph.shape == (n, n) and np.all(np.diag(graph) == 0) and graph.sum() > 0
