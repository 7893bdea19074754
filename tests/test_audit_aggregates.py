"""Per-class aggregates: exact, order-independent merges and bounded memory."""

import numpy as np
import pytest

from pipeline.audit.dataset.aggregates import HISTOGRAM_BINS, ClassAggregate, merge_all


def _records(n, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        yield (
            f"img/{i:04d}.png",
            {"gini": float(rng.uniform()), "energy_in_box": float(rng.uniform())},
            rng.uniform(size=(4, 4)),
            float(rng.uniform()),
            bool(rng.random() < 0.7) if i % 5 else None,
        )


def _aggregate(records, reservoir):
    agg = ClassAggregate(reservoir=reservoir)
    for key, metrics, small, confidence, correct in records:
        agg.add(key, metrics=metrics, small_map=small, confidence=confidence, correct=correct)
    return agg


def test_merging_bundles_in_any_order_equals_one_pass():
    records = list(_records(300))
    whole = _aggregate(records, reservoir=16)
    parts = [_aggregate(records[i::7], reservoir=16) for i in range(7)]
    for order in (parts, parts[::-1], parts[3:] + parts[:3]):
        merged = merge_all(order, reservoir=16)
        got, want = merged.summary(), whole.summary()
        assert got["histograms"] == want["histograms"]  # exact
        assert (got["count"], got["accuracy"]) == (want["count"], want["accuracy"])
        assert got["metrics"] == pytest.approx(want["metrics"], rel=1e-12)  # float sums
        assert got["mean_confidence"] == pytest.approx(want["mean_confidence"], rel=1e-12)
        assert merged.sample()[0] == whole.sample()[0]
        np.testing.assert_allclose(merged.mean_map(), whole.mean_map())


def test_the_numbers_and_the_reservoir_are_what_they_say():
    records = list(_records(300))
    agg = _aggregate(records, reservoir=16)
    s = agg.summary()
    assert s["count"] == 300
    labels = [r[4] for r in records if r[4] is not None]
    assert s["accuracy"] == pytest.approx(sum(labels) / len(labels))
    assert s["mean_confidence"] == pytest.approx(np.mean([r[3] for r in records]))
    assert s["metrics"]["gini"] == pytest.approx(np.mean([r[1]["gini"] for r in records]))
    assert sum(s["histograms"]["gini"]) == 300 and len(s["histograms"]["gini"]) == HISTOGRAM_BINS
    np.testing.assert_allclose(agg.mean_map(), np.mean([r[2] for r in records], axis=0))
    keys, maps = agg.sample()
    assert len(keys) == len(agg.members) == 16 and maps.shape == (16, 4, 4)  # bounded
    by_key = {r[0]: r[2] for r in records}
    for key, small in zip(keys, maps):
        np.testing.assert_array_equal(small, by_key[key])
