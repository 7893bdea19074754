"""The audit's per-record metrics on hand-made maps with known values, box mapping through
the real resize policies, and deletion / insertion on a linear model computed by hand."""

import numpy as np
import pytest

from pipeline.audit.metrics import concentration, faithfulness, localisation, spatial, weak_box
from pipeline.audit.metrics.relevance import relevance
from pipeline.store.resize import resize


def _one_hot(shape, where):
    m = np.zeros(shape)
    m[where] = 1.0
    return m


def test_relevance_sums_absolute_gradients_over_channels():
    g = np.array([[[1.0, -2.0], [0.0, 3.0]]])  # [1, 2, 2]
    np.testing.assert_array_equal(relevance(g), [[3.0, 3.0]])
    with pytest.raises(ValueError, match=r"\[H, W, C\]"):
        relevance(np.zeros((1, 2, 3, 4)))


def test_gini_and_entropy():
    assert concentration.gini(np.ones((4, 4))) == pytest.approx(0.0)
    assert concentration.gini(_one_hot((4, 4), (2, 1))) == pytest.approx(1 - 1 / 16)
    # sorted [0, 0, 1, 1]: 2 * (3 + 4) / (4 * 2) - 5 / 4 = 0.5
    assert concentration.gini(np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.5)
    assert concentration.entropy(np.ones((4, 4))) == pytest.approx(1.0)
    assert concentration.entropy(_one_hot((4, 4), (0, 0))) == pytest.approx(0.0)
    assert concentration.entropy(np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.5)
    two = np.array([[1.0, 1.0]])
    assert concentration.entropy(two, normalised=False) == pytest.approx(np.log(2))
    assert concentration.gini(np.zeros((3, 3))) == concentration.entropy(np.zeros((3, 3))) == 0
    with pytest.raises(ValueError, match="negative"):
        concentration.gini(-np.ones((2, 2)))


def test_spatial_distribution():
    assert spatial.centre_of_mass(np.ones((6, 6))) == pytest.approx((0.5, 0.5))
    assert spatial.centre_of_mass(_one_hot((4, 4), (0, 0))) == pytest.approx((0.125, 0.125))
    assert spatial.centre_of_mass(_one_hot((4, 8), (3, 2))) == pytest.approx((0.875, 0.3125))
    assert spatial.spread(np.ones((2, 2))) == pytest.approx(np.sqrt(0.125))
    assert spatial.spread(_one_hot((5, 5), (2, 3))) == pytest.approx(0.0)
    assert spatial.border_mass(np.ones((10, 10))) == pytest.approx(36 / 100)  # 1-pixel frame
    assert spatial.border_mass(_one_hot((10, 10), (5, 5))) == pytest.approx(0.0)
    corners = spatial.corner_masses(_one_hot((8, 8), (7, 0)))
    assert corners == {"top_left": 0.0, "top_right": 0.0, "bottom_left": 1.0, "bottom_right": 0.0}
    assert set(spatial.quadrant_masses(np.ones((4, 4))).values()) == {0.25}
    assert spatial.quadrant_masses(_one_hot((4, 4), (1, 2)))["top_right"] == 1.0
    assert spatial.outside_centre_mass(np.ones((4, 4))) == pytest.approx(0.75)
    assert spatial.outside_centre_mass(_one_hot((4, 4), (1, 2))) == pytest.approx(0.0)
    row = spatial.spatial_metrics(np.ones((8, 8)))
    assert row["centre_y"] == pytest.approx(0.5) and row["quadrant_top_left"] == 0.25


def test_pointing_energy_and_rank_accuracy_by_hand():
    mask = localisation.box_mask([[1, 1, 3, 3]], (4, 4))  # pixel centres 1.5 and 2.5
    assert mask.sum() == 4 and mask[1:3, 1:3].all()
    m = np.zeros((4, 4))
    m[1, 1], m[2, 2], m[0, 3], m[1, 2] = 5.0, 3.0, 4.0, 1.0
    assert localisation.pointing_game(m, mask)  # max 5 at (1, 1): inside
    assert localisation.energy_in_box(m, mask) == pytest.approx(9 / 13)
    # the 4 highest: 5 (in), 4 (out), 3 (in), 1 (in) -> 3 of 4
    assert localisation.rank_accuracy(m, mask) == pytest.approx(0.75)
    m[0, 0] = 9.0
    assert not localisation.pointing_game(m, mask)
    assert localisation.pointing_game(np.zeros((4, 4)), mask) is False
    two = localisation.box_mask([[0, 0, 1, 1], [3, 3, 4, 4]], (4, 4))
    assert two.sum() == 2 and two[0, 0] and two[3, 3]
    with pytest.raises(ValueError, match="ymin <= ymax"):
        localisation.box_mask([[3, 0, 1, 1]], (4, 4))


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("resize", [5.0, 5.0, 30.0, 30.0]), ("center_crop", [5.0, 5.0, 30.0, 35.0])],
)
def test_boxes_follow_the_resize_policy(policy, expected):
    # 100 x 200 original, 50 x 50 model input. center_crop keeps the centred 100 x 100 box
    # (x from 50 to 150) at scale 0.5.
    box = [10.0, 60.0, 60.0, 120.0] if policy == "center_crop" else [10.0, 20.0, 60.0, 120.0]
    got = localisation.map_boxes([box], (100, 200), (50, 50), policy)
    np.testing.assert_allclose(got, [expected])
    # Through the real decoder: a white rectangle at the box lands on the mapped box.
    pixels = np.zeros((100, 200, 3), np.uint8)
    y0, x0, y1, x1 = (int(v) for v in box)
    pixels[y0:y1, x0:x1] = 255
    bright = resize(pixels, (50, 50), policy)[..., 0] > 127
    mask = localisation.box_mask(got, (50, 50))
    assert (bright == mask).mean() >= 0.97  # edges resample to grey
    assert localisation.energy_in_box(bright.astype(float), mask) == pytest.approx(1.0, abs=0.05)


def test_boxes_cropped_away_are_empty_and_normalised_boxes_scale():
    gone = localisation.map_boxes([[0, 0, 100, 40]], (100, 200), (50, 50), "center_crop")
    assert localisation.box_mask(gone, (50, 50)).sum() == 0
    np.testing.assert_allclose(
        localisation.from_normalised([[0.1, 0.25, 0.5, 1.0]], (100, 200)), [[10, 50, 50, 200]]
    )


def _linear_model(weights):
    """predict(x) = [sum(w * x), -sum(w * x)]: the target-0 score is linear in the pixels."""

    def predict(batch):
        s = (np.asarray(batch, np.float64) * weights).sum(axis=(1, 2, 3))
        return np.stack([s, -s], axis=1)

    return predict


def test_deletion_and_insertion_curves_on_a_linear_model():
    rng = np.random.default_rng(0)
    w = rng.uniform(0.1, 1.0, (3, 3, 2))
    x = rng.uniform(0.5, 1.0, (2, 3, 3, 2))
    maps = [relevance(w * xi) for xi in x]  # each pixel's exact contribution
    predict = _linear_model(w)
    steps = 3  # 9 pixels: 0, 3, 6, 9 removed
    deletion = faithfulness.curves(predict, x, maps, [0, 0], mode="deletion", steps=steps)
    insertion = faithfulness.curves(predict, x, maps, [0, 0], mode="insertion", steps=steps)
    for i in range(2):
        contrib = np.sort(maps[i].ravel())[::-1]
        total = contrib.sum()
        removed = np.array([0, contrib[:3].sum(), contrib[:6].sum(), total])
        np.testing.assert_allclose(deletion[i], total - removed, rtol=1e-6)
        np.testing.assert_allclose(insertion[i], removed, rtol=1e-6)
        area = (deletion[i][1:] + deletion[i][:-1]).sum() / (2 * steps)
        assert faithfulness.auc(deletion[i]) == pytest.approx(area)
    # Ranked by the map, deletion falls fastest: below a reversed (worst) ranking.
    worst = faithfulness.curves(predict, x, [-m + m.max() for m in maps], [0, 0],
                                mode="deletion", steps=steps)  # fmt: skip
    assert (faithfulness.auc(deletion) < faithfulness.auc(worst)).all()
    # Chunking does not change the numbers.
    chunked = faithfulness.curves(predict, x, maps, [0, 0], mode="deletion", steps=steps, chunk=1)
    np.testing.assert_array_equal(chunked, deletion)
    with pytest.raises(ValueError, match="mode"):
        faithfulness.curves(predict, x, maps, [0, 0], mode="erasure")


def test_perturbed_copies_hold_the_image_or_the_baseline_exactly():
    rng = np.random.default_rng(3)
    image = rng.uniform(-1, 1, (4, 5, 3)).astype(np.float32)
    m = rng.uniform(size=(4, 5))
    order = np.argsort(-m.ravel(), kind="stable")
    for mode, baseline in (("deletion", 0.0), ("deletion", 0.5), ("insertion", -0.25)):
        copies = faithfulness.perturbed(image, m, mode=mode, steps=4, baseline=baseline)
        assert copies.shape == (5, 4, 5, 3)
        for k, copy in enumerate(copies):
            n = int(np.floor(k * 20 / 4))
            flat, img = copy.reshape(20, 3), image.reshape(20, 3)
            changed = np.zeros(20, bool)
            changed[order[:n]] = True
            take_image = ~changed if mode == "deletion" else changed
            np.testing.assert_array_equal(flat[take_image], img[take_image])
            np.testing.assert_array_equal(flat[~take_image], np.float32(baseline))


def test_deletion_and_insertion_in_groups_equal_the_curves():
    rng = np.random.default_rng(1)
    w = rng.uniform(0.1, 1.0, (3, 3, 2))
    x = rng.uniform(0.5, 1.0, (7, 3, 3, 2))
    maps = np.stack([relevance(w * xi) for xi in x])
    predict = _linear_model(w)
    calls = []

    def counted(batch):
        calls.append(len(batch))
        return predict(batch)

    both = faithfulness.deletion_and_insertion(counted, x, maps, [0] * 7, steps=3, chunk=2)
    # The ends once (7 images + the baseline image), then steps 1..2 of each mode.
    assert sum(calls) == 7 + 1 + 7 * 2 * 2
    for mode in ("deletion", "insertion"):
        alone = faithfulness.curves(predict, x, maps, [0] * 7, mode=mode, steps=3)
        np.testing.assert_allclose(both[mode], alone, rtol=1e-12)
    one_step = faithfulness.deletion_and_insertion(predict, x, maps, [0] * 7, steps=1)
    np.testing.assert_allclose(
        one_step["deletion"], faithfulness.curves(predict, x, maps, [0] * 7, mode="deletion",
                                                  steps=1), rtol=1e-12)  # fmt: skip


def _scene(rng):
    """A red rectangle on noisy green, and a map that covers the rectangle loosely."""
    image = np.full((64, 64, 3), (40, 120, 40), np.uint8) + rng.integers(0, 20, (64, 64, 3)).astype(
        np.uint8
    )
    image[16:44, 20:52] = (200, 60, 50)
    yy, xx = np.mgrid[:64, :64]
    m = np.exp(-(((yy - 30) / 9.0) ** 2 + ((xx - 36) / 11.0) ** 2)) + rng.uniform(0, 0.05, (64, 64))
    return image, m


def test_simonyan_weak_box_finds_the_object_from_the_map_and_colours():
    image, m = _scene(np.random.default_rng(0))
    box = weak_box.weak_box(m, image)
    assert box == (16.0, 20.0, 44.0, 52.0)  # the seeds grow to the whole coloured object
    assert weak_box.iou(box, (16, 20, 44, 52)) == 1.0
    assert weak_box.weak_box_metrics(m, image, [(16, 20, 44, 52)]) == {
        "box_iou": 1.0, "box_correct": 1.0}  # fmt: skip
    # A flat map seeds nothing: no box, IoU 0.
    assert weak_box.weak_box(np.ones((64, 64)), image) is None
    assert weak_box.weak_box_metrics(np.ones((64, 64)), image, [(0, 0, 8, 8)])["box_iou"] == 0.0


def test_iou_and_largest_component_by_hand():
    assert weak_box.iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert weak_box.iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    mask = np.zeros((8, 8), bool)
    mask[0:2, 0:2] = True  # 4 pixels
    mask[4:8, 3] = True  # 4 + 3 = 7 pixels, an L joined through (7, 4..6)
    mask[7, 4:7] = True
    mask[5, 6] = True  # touches only diagonally: its own region
    largest = weak_box.largest_component(mask)
    assert largest.sum() == 7 and largest[4, 3] and largest[7, 6] and not largest[5, 6]
    assert not weak_box.largest_component(np.zeros((3, 3), bool)).any()


def test_pixel_order_breaks_ties_in_row_major_order_fast_path_or_not():
    rng = np.random.default_rng(4)
    distinct = rng.uniform(size=(6, 7))
    np.testing.assert_array_equal(
        faithfulness.pixel_order(distinct), np.argsort(-distinct.ravel(), kind="stable")
    )
    tied = np.round(rng.uniform(size=(6, 7)), 1)  # many equal values, and zeros
    np.testing.assert_array_equal(
        faithfulness.pixel_order(tied), np.argsort(-tied.ravel(), kind="stable")
    )
    assert faithfulness.pixel_order(np.zeros((2, 3))).tolist() == [0, 1, 2, 3, 4, 5]


def test_a_large_map_is_segmented_at_half_size_and_its_box_scaled_back():
    rng = np.random.default_rng(5)
    image = np.full((224, 224, 3), (40, 120, 40), np.uint8) + rng.integers(
        0, 20, (224, 224, 3)
    ).astype(np.uint8)
    image[56:154, 70:182] = (200, 60, 50)
    yy, xx = np.mgrid[:224, :224]
    m = np.exp(-(((yy - 105) / 32.0) ** 2 + ((xx - 126) / 38.0) ** 2)) + rng.uniform(
        0, 0.05, (224, 224)
    )
    box = weak_box.weak_box(m, image)  # segmented at 112 x 112
    assert box == (56.0, 70.0, 154.0, 182.0)  # even edges: exact after scaling back
    assert weak_box.weak_box_metrics(m, image, [(56, 70, 154, 182)])["box_correct"] == 1.0
