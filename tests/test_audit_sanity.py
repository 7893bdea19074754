"""The sanity check on the shipped trained CNN: cascading randomisation of its top layers
changes vanilla and SmoothGrad maps, and barely changes guided backprop's."""

import glob
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.audit.causal.sanity import (
    CAVEAT,
    STATISTICS,
    cascading_randomisation,
    layers_top_down,
    similarity,
)
from pipeline.audit.metrics.correlation import average_ranks, spearman
from pipeline.audit.metrics.ssim import ssim, unit_peak
from pipeline.engine.models import ModelSpec, load_model

ROOT = Path(__file__).resolve().parents[1]


def test_spearman_of_maps():
    a = np.arange(16.0).reshape(4, 4)
    assert spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, np.ones((4, 4))) == 0.0  # a constant map has no order: 0, not nan


def test_average_ranks_and_spearman_with_ties_by_hand():
    np.testing.assert_array_equal(average_ranks([10, 20, 20, 30]), [1, 2.5, 2.5, 4])
    np.testing.assert_array_equal(average_ranks([[3, 1], [3, 3]]), [3, 1, 3, 3])
    np.testing.assert_array_equal(average_ranks([]), [])
    # a = [1, 2, 2, 3], b = [1, 3, 2, 2]: ranks [1, 2.5, 2.5, 4] and [1, 4, 2.5, 2.5];
    # centred [-1.5, 0, 0, 1.5] and [-1.5, 1.5, 0, 0]: 2.25 / sqrt(4.5 * 4.5) = 0.5
    # (scipy.stats.spearmanr gives 0.5 too; ranking ties by position would give 0.4)
    assert spearman(np.array([1, 2, 2, 3]), np.array([1, 3, 2, 2])) == pytest.approx(0.5)
    # a sparse map: half zeros. Position ranks would call these two maps correlated (the
    # zeros' positions agree); average ranks see the same nonzero order reversed.
    a = np.array([0, 0, 0, 0, 1, 2, 3, 4], float)
    b = np.array([0, 0, 0, 0, 4, 3, 2, 1], float)
    # ranks a: [2.5]*4 + [5, 6, 7, 8]; b: [2.5]*4 + [8, 7, 6, 5]; centred both
    # [-2]*4 + [0.5, 1.5, 2.5, 3.5] vs [-2]*4 + [3.5, 2.5, 1.5, 0.5]:
    # (16 + 1.75 + 3.75 + 3.75 + 1.75) / (16 + 0.25 + 2.25 + 6.25 + 12.25) = 27 / 37
    assert spearman(a, b) == pytest.approx(27 / 37)
    with pytest.raises(ValueError, match="same size"):
        spearman(np.zeros(3), np.zeros(4))


@pytest.mark.slow
def test_cascading_randomisation_separates_gradients_from_guided_backprop():
    loaded = load_model(ModelSpec(name=str(ROOT / "examples/model/shapes_cnn.keras"),
                                  preprocessing="unit"))  # fmt: skip
    files = sorted(glob.glob(str(ROOT / "examples/images/*.jpg")))[:4]
    x = np.stack([np.asarray(Image.open(f).convert("RGB").resize((64, 64)), np.float32) / 255
                  for f in files])  # fmt: skip
    targets = np.argmax(np.asarray(loaded.model(x)), axis=1)
    result = cascading_randomisation(
        loaded.model, x, targets, ("vanilla", "guided", "smoothgrad"), samples=8
    )
    assert result.layers == tuple(layers_top_down(loaded.model)[:3])
    assert result.layers[0] == "predictions"  # the logits layer first
    c = result.correlations
    assert result.depends_on_weights == {"vanilla": True, "guided": False, "smoothgrad": True}
    assert all(g > v + 0.1 for g, v in zip(c["guided"], c["vanilla"]))
    assert c["vanilla"][-1] < c["vanilla"][0]  # falls as more of the model goes
    for method, stats in result.statistics.items():  # every statistic, every step
        assert set(stats) == set(STATISTICS) and stats["spearman_abs"] == c[method]
        assert all(len(v) == 3 and all(-1 <= x <= 1 for x in v) for v in stats.values())
    s = result.statistics
    assert s["guided"]["ssim"][0] > s["vanilla"]["ssim"][0]  # SSIM tells them apart too
    assert result.caveat == CAVEAT and "Binder et al. 2023" in CAVEAT


def test_sync_copies_carries_in_place_weight_changes_into_the_guided_clone():
    import keras

    from pipeline.engine.explainer import Explainer

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(3)])  # fmt: skip
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    explainer = Explainer(model, fold=False)
    before = explainer.explain(x, "guided", targets=[0, 1]).gradients
    conv = model.layers[0]
    conv.kernel.assign(np.asarray(conv.kernel) * -2.0)
    stale = explainer.explain(x, "guided", targets=[0, 1]).gradients
    np.testing.assert_array_equal(stale, before)  # the guided clone holds copies ...
    explainer.sync_copies()
    synced = explainer.explain(x, "guided", targets=[0, 1]).gradients
    fresh = Explainer(model, fold=False).explain(x, "guided", targets=[0, 1]).gradients
    np.testing.assert_allclose(synced, fresh, rtol=1e-6, atol=1e-7)  # ... until synced
    assert not np.allclose(synced, before)
    with pytest.raises(TypeError, match="fold"):
        Explainer(model, fold="no")


def _ssim_by_hand(x: np.ndarray, y: np.ndarray, w: int = 7) -> float:
    """SSIM as Wang et al. define it, window by window with numpy's sample statistics."""
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(x.shape[0] - w + 1):
        for j in range(x.shape[1] - w + 1):
            a, b = x[i : i + w, j : j + w].ravel(), y[i : i + w, j : j + w].ravel()
            cov = np.cov(a, b, ddof=1)
            ma, mb = a.mean(), b.mean()
            top = (2 * ma * mb + c1) * (2 * cov[0, 1] + c2)
            values.append(top / ((ma**2 + mb**2 + c1) * (cov[0, 0] + cov[1, 1] + c2)))
    return float(np.mean(values))


def test_ssim_window_by_window_and_its_invariances():
    rng = np.random.default_rng(0)
    x, y = rng.random((7, 7)), rng.random((7, 7))
    assert ssim(x, y) == pytest.approx(_ssim_by_hand(x, y), rel=1e-12)  # one window
    x, y = rng.random((11, 9)), rng.random((11, 9)) ** 3
    assert ssim(x, y) == pytest.approx(_ssim_by_hand(x, y), rel=1e-12)  # 5 x 3 windows
    assert ssim(x, x) == pytest.approx(1.0)
    small = rng.random((4, 5))  # smaller than the window: the largest odd one (3)
    assert ssim(small, small**2) == pytest.approx(_ssim_by_hand(small, small**2, 3), rel=1e-12)
    assert ssim(unit_peak(x), unit_peak(5 * x)) == pytest.approx(1.0)  # the scale is not shape
    with pytest.raises(ValueError, match="one shape"):
        ssim(np.zeros((7, 7)), np.zeros((7, 8)))


def test_the_three_sanity_statistics_by_hand():
    g0 = np.array([[[1.0, -2.0], [0.0, 0.0]], [[3.0, 1.0], [-1.0, -1.0]]])  # [2, 2, 2]
    g1 = -g0
    # |g| summed is the same map: rank 1 on |map|; the signed sums are negated: -1
    assert similarity("spearman_abs", g0, g1) == pytest.approx(1.0)
    assert similarity("spearman_signed", g0, g1) == pytest.approx(-1.0)
    assert similarity("ssim", g0, g1) == pytest.approx(1.0)
    # ties: signed sums [-1, 0, 4, -2] vs [-1, 0, 0, -2] -> ranks [2, 3, 4, 1] and
    # [2, 3.5, 3.5, 1]: centred [-.5, .5, 1.5, -1.5] . [-.5, 1, 1, -1.5] = 4.5 / sqrt(5 * 4.5)
    g2 = g0.copy()
    g2[1, 0] = [0.0, 0.0]
    assert similarity("spearman_signed", g0, g2) == pytest.approx(4.5 / np.sqrt(5 * 4.5))
    with pytest.raises(ValueError, match="statistic"):
        similarity("hog", g0, g1)


def _hand_written_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """The SSIM this project carried before scikit-image's (integral-image windows)."""

    def means(a, w):
        c = np.pad(a, ((1, 0), (1, 0))).cumsum(axis=0).cumsum(axis=1)
        return (c[w:, w:] - c[:-w, w:] - c[w:, :-w] + c[:-w, :-w]) / (w * w)

    w = min(7, *x.shape)
    w -= 1 - w % 2
    n = w * w
    cov = n / (n - 1)
    mx, my = means(x, w), means(y, w)
    vx, vy = cov * (means(x * x, w) - mx * mx), cov * (means(y * y, w) - my * my)
    vxy = cov * (means(x * y, w) - mx * my)
    c1, c2 = 0.01**2, 0.03**2
    return float((((2 * mx * my + c1) * (2 * vxy + c2))
                  / ((mx * mx + my * my + c1) * (vx + vy + c2))).mean())  # fmt: skip


def _hand_written_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """The Pearson correlation of average ranks, as this project computed it before SciPy."""

    def ranks(v):
        flat = np.ravel(v)
        order = np.argsort(flat, kind="stable")
        ordered = flat[order]
        first = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        counts = np.diff(np.r_[first, flat.size])
        out = np.empty(flat.size)
        out[order] = np.repeat(first + (counts + 1) / 2.0, counts)
        return out - out.mean()

    ra, rb = ranks(a), ranks(b)
    return float((ra @ rb) / np.sqrt((ra @ ra) * (rb @ rb)))


@pytest.mark.parametrize("shape", [(7, 7), (11, 9), (16, 16), (5, 6), (224, 224)])
def test_the_libraries_equal_the_hand_written_numerics_they_replace(shape):
    rng = np.random.default_rng(sum(shape))
    x = unit_peak(rng.gamma(0.5, size=shape))
    y = unit_peak(np.where(rng.random(shape) < 0.4, 0.0, x + rng.normal(0, 0.2, shape)))
    y = np.abs(y)
    assert ssim(x, y) == pytest.approx(_hand_written_ssim(x, y), abs=1e-12)
    assert spearman(x, y) == pytest.approx(_hand_written_spearman(x, y), abs=1e-12)
