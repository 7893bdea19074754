"""Shortcut flags on synthetic classes: the planted corner mark, a mark away from the
corners and a border-driven class are flagged with their evidence and members; clean
controls (the object anywhere in the middle half) raise no flag."""

import numpy as np
import pytest

from pipeline.audit.dataset import strategies as S
from pipeline.audit.dataset.flags import (
    BORDER_THRESHOLD,
    CORNER_THRESHOLD,
    OFF_PROTOTYPE_THRESHOLD,
    class_flags,
    prototype_distance,
)
from pipeline.testing.audit_data import synthetic_class


def _flags(keys, maps):
    found = S.discover(maps)
    return class_flags("guided", found, keys, maps.mean(axis=0), maps)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_planted_corner_mark_is_flagged_with_its_members_and_evidence(seed):
    keys, maps, planted = synthetic_class(seed, shortcut=0.3)
    flags = _flags(keys, maps)
    assert [f["kind"] for f in flags] == ["corner", "off_prototype"]
    flag = flags[0]
    assert sorted(flag["members"]) == sorted(k for k, p in zip(keys, planted) if p)
    assert flags[1]["members"] == flag["members"]
    assert flags[1]["evidence"]["value"] >= OFF_PROTOTYPE_THRESHOLD
    evidence = flag["evidence"]
    assert evidence["threshold"] == CORNER_THRESHOLD and evidence["value"] >= CORNER_THRESHOLD
    assert "top_left" in evidence["measured"] and flag["method"] == "guided"
    assert evidence["cluster_size"] == planted.sum() and evidence["class_sample"] == 120


def test_a_class_that_looks_at_the_border_is_flagged():
    keys, maps, _ = synthetic_class(2, border=True)
    kinds = {f["kind"] for f in _flags(keys, maps)}
    assert "border_class" in kinds
    flag = next(f for f in _flags(keys, maps) if f["kind"] == "border_class")
    assert flag["evidence"]["value"] >= BORDER_THRESHOLD and len(flag["members"]) == 120


@pytest.mark.parametrize("seed", [3, 4])
def test_a_mark_away_from_the_corners_is_far_from_the_class_prototype(seed):
    keys, maps, planted = synthetic_class(seed, shortcut=0.3, mark=(8, 32))
    flags = _flags(keys, maps)
    assert [f["kind"] for f in flags] == ["off_prototype"]
    assert sorted(flags[0]["members"]) == sorted(k for k, p in zip(keys, planted) if p)


def test_prototype_distance_is_in_units_of_the_others_spread():
    keys, maps, planted = synthetic_class(0, shortcut=0.3)
    assert prototype_distance(maps, planted) > 30  # the mark: far
    half = np.arange(len(maps)) % 2 == 0
    clean = synthetic_class(0)[1]
    assert prototype_distance(clean, half) < 1  # any split of a clean class: near
    assert prototype_distance(np.ones((4, 2, 2)), np.array([1, 0, 0, 0], bool)) == 0.0


@pytest.mark.parametrize("seed", range(8))
def test_clean_controls_raise_no_flag(seed):
    keys, maps, _ = synthetic_class(seed)
    assert _flags(keys, maps) == []
