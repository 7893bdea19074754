"""maps.py: exact views of a hand-made gradient, the normalisation rule, and invariances."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.maps import views as maps

# A 2x2x3 gradient with known signs: sums of |g|, g+, g- and max|g| per pixel are
#   abs [[6, 0], [3, 8]]   positive [[4, 0], [0, 4]]   negative [[2, 0], [3, 4]]
#   max [[3, 0], [1, 4]]
G = np.array(
    [[[1.0, -2.0, 3.0], [0.0, 0.0, 0.0]], [[-1.0, -1.0, -1.0], [4.0, 0.0, -4.0]]],
    dtype=np.float32,
)


def test_views_exact_at_percentile_100():
    views = maps.compute_views(G, percentile=100.0)
    assert set(views) == {"abs", "positive", "negative", "max"}
    np.testing.assert_array_equal(views["abs"], [[0.75, 0.0], [0.375, 1.0]])
    np.testing.assert_array_equal(views["positive"], [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(views["negative"], [[0.5, 0.0], [0.75, 1.0]])
    np.testing.assert_array_equal(views["max"], [[0.75, 0.0], [0.25, 1.0]])
    for v in views.values():
        assert v.dtype == np.float32


def test_image_x_abs_is_image_weighted_abs():
    white = np.full((2, 2, 3), 255, np.uint8)
    views = maps.compute_views(G, white, percentile=100.0)
    np.testing.assert_allclose(views["image_x_abs"], views["abs"], rtol=0, atol=1e-7)
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    views = maps.compute_views(G, red, percentile=100.0)
    np.testing.assert_allclose(views["image_x_abs"], views["abs"] / 3.0, rtol=1e-6)
    rgb = maps.image_times_abs(G, red, percentile=100.0)
    assert rgb.shape == (2, 2, 3)
    np.testing.assert_allclose(rgb[..., 0], [[0.75, 0.0], [0.375, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(rgb[..., 1:], 0.0)


def test_normalise_clips_at_percentile():
    m = np.arange(101, dtype=np.float32)  # the q-th percentile of 0..100 is q
    out = maps.normalise(m, 90.0)
    assert out[45] == pytest.approx(0.5)
    assert out[90] == 1.0 and out[100] == 1.0
    assert out.min() == 0.0
    default = maps.normalise(m)  # 99th percentile -> 99
    assert default[99] == 1.0 and default[33] == pytest.approx(33 / 99)


def test_normalise_sparse_zero_and_non_finite_maps():
    sparse = np.zeros(1000, np.float32)
    sparse[7] = 5.0  # the 99th percentile is 0: fall back to the maximum
    out = maps.normalise(sparse)
    assert out[7] == 1.0 and out.sum() == 1.0
    zeros = maps.normalise(np.zeros((4, 4)))
    assert np.all(zeros == 0.0) and not np.isnan(zeros).any()
    weird = maps.normalise(np.array([np.nan, np.inf, -np.inf, -3.0, 2.0, 4.0]), 100.0)
    np.testing.assert_array_equal(weird, [0.0, 0.0, 0.0, 0.0, 0.5, 1.0])


@pytest.mark.parametrize("bad", [0.0, -1.0, 100.5])
def test_normalise_rejects_bad_percentile(bad):
    with pytest.raises(ValueError, match="percentile"):
        maps.normalise(np.ones(3), bad)


def test_invariances():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(8, 8, 3)).astype(np.float32)
    base = maps.compute_views(g)
    scaled = maps.compute_views(g * 37.0)
    for view in base:
        np.testing.assert_allclose(scaled[view], base[view], atol=1e-6)
    flipped = maps.compute_views(-g)
    np.testing.assert_array_equal(flipped["positive"], base["negative"])
    np.testing.assert_array_equal(flipped["negative"], base["positive"])
    np.testing.assert_array_equal(flipped["abs"], base["abs"])
    half = maps.compute_views(g.astype(np.float16))
    np.testing.assert_allclose(half["abs"], base["abs"], atol=2e-3)
    for v in base.values():
        assert v.min() >= 0.0 and v.max() == 1.0


def test_views_subset_and_validation():
    assert set(maps.compute_views(G, views=("abs",))) == {"abs"}
    with pytest.raises(ValueError, match="unknown"):
        maps.compute_views(G, views=("nope",))
    with pytest.raises(ValueError, match="image"):
        maps.compute_views(G, views=("image_x_abs",))
    with pytest.raises(ValueError, match="H, W, C"):
        maps.compute_views(G[..., 0])
    with pytest.raises(TypeError, match="float"):
        maps.compute_views(G.astype(np.int32))
    with pytest.raises(ValueError, match="image"):
        maps.compute_views(G, np.zeros((3, 3, 3), np.uint8))
