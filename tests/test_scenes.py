"""The shortcut scenes (pipeline.demo.scenes): seeded, objects anywhere with their boxes,
each plant where it says, marks of the sizes and opacities the suite states."""

import pytest

from pipeline.demo.scenes import MARK_RANGE, Plant, load_photos, make_scenes

PLANTS = (Plant("tag", 0, "ruler"), Plant("stamp", 1, "text"), Plant("frame", 2),
          Plant("background", 3))  # fmt: skip


@pytest.fixture(scope="module")
def photos():
    return load_photos()


def test_scenes_are_seeded_and_their_plants_sit_where_they_say(photos):
    a = make_scenes(3, size=96, classes=5, per_class=40, plants=PLANTS, photos=photos)
    b = make_scenes(3, size=96, classes=5, per_class=40, plants=PLANTS, photos=photos)
    assert (a.images == b.images).all() and (a.planted == b.planted).all()
    assert len(photos) >= 19  # the bundled six and scikit-image's
    assert a.images.shape == (200, 96, 96, 3) and a.labels.tolist() == sorted(a.labels.tolist())
    for j, plant in enumerate(PLANTS):
        mine = a.labels == plant.cls
        assert not a.planted[j][~mine].any()  # only in its class
        share = a.planted[j][mine].mean()
        assert share == 1.0 if plant.kind == "background" else 0.25 < share < 0.75, share
    marks = a.mark_boxes[0][a.planted[0]]  # the moving tag: 8-20 px, anywhere
    sides = marks[:, 2] - marks[:, 0]
    assert sides.min() >= round(96 * MARK_RANGE[0]) and sides.max() <= round(96 * MARK_RANGE[1])
    assert marks[:, 0].std() > 10 and marks[:, 1].std() > 10
    stamps = a.mark_boxes[1][a.planted[1]]
    assert len({(y < 48, x < 48) for y, x in stamps[:, :2]}) == 1  # one corner
    sides = a.boxes[:, 2] - a.boxes[:, 0]
    assert sides.min() >= 17 and sides.max() <= 39 and (a.boxes >= 0).all()
    assert (a.boxes[:, :2] < 8).any(axis=1).any()  # objects reach the border too
    with pytest.raises(ValueError, match="Plant.kind"):
        Plant("sticker", 0)
    with pytest.raises(ValueError, match="Plant.cls"):
        make_scenes(0, classes=2, plants=(Plant("tag", 5),), photos=photos)
