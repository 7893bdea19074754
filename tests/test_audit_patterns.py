"""Shortcuts wherever they sit (audit.hotspots): a tag at a random place in part of one
class's images, learnt by a model trained here, is flagged ``repeated_pattern`` with the
tagged images as members (precision and recall >= 0.8) at two strengths, the brighter as
bright as the object, and so is a fixed corner mark (not moving); the same model family
trained without the tag raises no such flag."""

import numpy as np
import pytest

from pipeline.audit.dataset.repeated_patterns import (
    MIN_CONTRAST,
    PATTERN_SIMILARITY,
    repeated_pattern_flags,
    similarities,
)
from pipeline.audit.record.hotspots import context_pixels, hotspots
from pipeline.testing.patterns import TAG, corner_images
from pipeline.testing.patterns import class_reports as _reports
from pipeline.testing.patterns import tag_images as _images
from pipeline.testing.patterns import trained as _trained


@pytest.mark.slow
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_a_moving_tag_is_flagged_with_the_tagged_images(strength):
    images, labels, marks = _images(0, tagged=True, strength=strength)
    model = _trained(images, labels, 0)
    tagged = {f"img/{i:04d}.png" for i in np.flatnonzero(marks)}
    for method in ("vanilla", "guided"):
        reports = _reports(model, images, method)
        moving = [
            f for r in reports.values() for f in r["flags"] if f["kind"] == "repeated_pattern"
        ]
        assert moving, f"{method}: no moving_pattern flag"
        flagged = {k for f in moving for k in f["members"]}
        precision = len(flagged & tagged) / len(flagged)
        recall = len(flagged & tagged) / len(tagged)
        assert precision >= 0.8 and recall >= 0.8, (method, precision, recall)
        for f in moving:
            e = f["evidence"]
            assert e["value"] >= PATTERN_SIMILARITY and e["value"] - e["control"] >= MIN_CONTRAST
            assert e["movement"] > 0.15  # it moves: the std of its place, in image sides
        assert not [f for f in reports[1]["flags"] if f["kind"] == "repeated_pattern"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_the_same_model_trained_without_the_tag_raises_no_moving_flag(seed):
    images, labels, _ = _images(seed, tagged=False)
    model = _trained(images, labels, seed)
    for method in ("vanilla", "guided"):
        flags = [f for r in _reports(model, images, method).values() for f in r["flags"]]
        assert [f for f in flags if f["kind"] == "repeated_pattern"] == []


def _scene(rng, size=32):
    return rng.uniform(0.0, 0.25, (size, size, 3))


def test_hotspot_finds_the_window_and_its_pixels():
    rng = np.random.default_rng(0)
    image = _scene(rng)
    image[20:23, 5:8] = TAG
    m = np.full((32, 32), 0.01)
    m[20:23, 5:8] = 1.0  # 9 of the map's 9 + 0.01 * 1015 relevance
    spot = hotspots(m, image)[0]
    assert spot["cells"] == 4 and context_pixels(spot).shape == (8, 8, 3)
    # the argmax window is the first 4 x 4 holding the 3 x 3 block: rows 19-22, cols 4-7
    assert spot["y"] == pytest.approx((19 + 2) / 32) and spot["x"] == pytest.approx((4 + 2) / 32)
    assert spot["share"] == pytest.approx((9 + 7 * 0.01) / m.sum())
    context = context_pixels(spot)  # 2 pixels around the window, at uint8 precision
    np.testing.assert_allclose(context[3:6, 3:6], np.round(TAG * 255) / 255)
    np.testing.assert_allclose(context, np.round(image[17:25, 2:10] * 255) / 255)


def test_similarities_do_not_depend_on_where_the_pattern_sits():
    rng = np.random.default_rng(1)
    spots = []
    for ty, tx in [(2, 3), (20, 25), (11, 11), (27, 1)]:  # one tag, four places
        image = _scene(rng)
        image[ty : ty + 3, tx : tx + 3] = TAG
        m = rng.uniform(0, 0.01, (32, 32))
        m[ty : ty + 3, tx : tx + 3] += 1.0
        spots.append(hotspots(m, image)[0])
    flat = _scene(rng)
    flat[8:20, 8:20] = (0.2, 0.9, 0.2)  # the inside of an object: one colour
    m = np.zeros((32, 32))
    m[12:16, 12:16] = 1.0
    spots.append(hotspots(m, flat)[0])
    contexts = np.stack([context_pixels(s) for s in spots])
    sim = similarities(contexts, 4)
    assert sim[:4, :4].min() > 0.95  # the tag matches itself wherever it is
    assert (sim[4] == 0).all()  # a flat patch matches nothing
    np.testing.assert_allclose(sim, sim.T)


def test_the_rule_keeps_a_minority_pattern_and_reads_a_common_one_as_the_object():
    rng = np.random.default_rng(2)
    keys, spots = [], []
    for i in range(40):
        image, m = _scene(rng), rng.uniform(0, 0.01, (32, 32))
        ty, tx = rng.integers(0, 29, 2)
        if i < 12:  # 12 of 40 carry the tag
            image[ty : ty + 3, tx : tx + 3] = TAG
        m[ty : ty + 3, tx : tx + 3] += 1.0  # the others: a hotspot on noise
        keys.append(f"k{i:02d}")
        spots.append(hotspots(m, image)[:1])
    [flag] = repeated_pattern_flags("vanilla", keys, spots)
    assert flag["members"] == keys[:12] and flag["kind"] == "repeated_pattern"
    assert flag["evidence"]["class_sample"] == 40 and flag["evidence"]["cluster_size"] == 12
    # The same tag in 36 of 40 (above MAX_PATTERN_SHARE): the class's object, no flag.
    everywhere = [spots[i % 12] for i in range(36)] + spots[36:]
    assert repeated_pattern_flags("vanilla", keys, everywhere) == []
    assert repeated_pattern_flags("vanilla", keys[:4], spots[:4]) == []  # too few members


@pytest.mark.slow
def test_a_fixed_corner_mark_is_a_repeated_pattern_that_does_not_move():
    images, labels, marked = corner_images(0, planted=True)
    model = _trained(images, labels, 0)
    marks = {f"img/{i:04d}.png" for i in np.flatnonzero(marked)}
    reports = _reports(model, images, "vanilla")
    [flag] = [f for f in reports[0]["flags"] if f["kind"] == "repeated_pattern"]
    members = set(flag["members"])
    assert len(members & marks) >= 0.8 * len(marks) and len(members - marks) <= 0.2 * len(members)
    assert flag["evidence"]["movement"] < 0.05  # stationary: the corner rule's case too
