"""Shortcut flags on synthetic classes: the planted corner mark and a border-driven class
are flagged with their evidence and members; clean controls raise no flag."""

import pytest
from _audit_data import synthetic_class

from pipeline.audit import strategies as S
from pipeline.audit.flags import BORDER_THRESHOLD, CORNER_THRESHOLD, class_flags


def _flags(keys, maps):
    found = S.discover(maps)
    return class_flags("guided", found, keys, maps.mean(axis=0))


@pytest.mark.parametrize("seed", [0, 1])
def test_a_planted_corner_mark_is_flagged_with_its_members_and_evidence(seed):
    keys, maps, planted = synthetic_class(seed, shortcut=0.3)
    flags = _flags(keys, maps)
    assert [f["kind"] for f in flags] == ["corner"]
    flag = flags[0]
    assert sorted(flag["members"]) == sorted(k for k, p in zip(keys, planted) if p)
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


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_clean_controls_raise_no_flag(seed):
    keys, maps, _ = synthetic_class(seed)
    assert _flags(keys, maps) == []
