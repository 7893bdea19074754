"""Patterns the way the model sees them (engine.features, audit.feature_patterns, the
feature path of audit.hotspots' repeated_pattern rule), context shortcuts and frames
relative to the other classes (audit.relative)
and the background-swap test, on hand-made numbers."""

import keras
import numpy as np
import pytest

from pipeline.audit.causal.interventions import Subject, confirm_flag
from pipeline.audit.dataset.feature_groups import class_rates, standardised_features
from pipeline.audit.dataset.relative import CONTEXT_Z, FRAME_Z, context_flags, frame_flags
from pipeline.audit.dataset.repeated_patterns import (
    ENRICHMENT,
    foreign_windows,
    repeated_pattern_flags,
)
from pipeline.audit.record.hotspots import (
    encode_context,
    encode_features,
    feature_vector,
    hotspots,
    pooled_features,
)
from pipeline.demo.train import build_model
from pipeline.engine.explainer import Explainer
from pipeline.engine.features import feature_layer


def test_the_feature_layer_is_the_deepest_with_eight_cells_a_side():
    model = build_model(96, 4)  # 48 (stem) -> 24 (pool) -> 12 (conv3, conv4) -> GAP
    assert feature_layer(model).name == "conv4"
    x = np.random.default_rng(0).uniform(0, 1, (3, 96, 96, 3)).astype(np.float32)
    want = keras.Model(model.inputs, model.get_layer("conv4").output)(x).numpy()
    got = Explainer(model, precision="float32", pad_to=2).features(x)  # 2 pieces, 1 padded
    assert got.shape == (3, 12, 12, 64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    small = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, strides=4),
                              keras.layers.Flatten(), keras.layers.Dense(2)])  # fmt: skip
    assert feature_layer(small) is None  # 4 x 4 cells: coarser than a hotspot window
    assert Explainer(small, precision="float32").features(x[:1, :16, :16]) is None


def test_a_windows_features_are_the_mean_over_the_cells_it_covers():
    features = np.arange(4 * 4 * 2, dtype=np.float64).reshape(4, 4, 2)  # a 4 x 4 grid
    # pixels 8..15 x 0..7 of a 16 x 16 image: cells rows 2-3, column 0-1
    np.testing.assert_allclose(pooled_features(features, (8, 0, 16, 8), (16, 16)),
                               features[2:4, 0:2].mean(axis=(0, 1)))  # fmt: skip
    # a window inside one cell takes that cell
    np.testing.assert_allclose(pooled_features(features, (5, 5, 7, 7), (16, 16)), features[1, 1])
    m = np.zeros((16, 16))
    m[8:10, 0:2] = 1.0
    spot = hotspots(m, None, features)[0]
    np.testing.assert_allclose(feature_vector(spot), np.round(features[2, 0], 1), rtol=1e-3)


def _members(rng, n: int, pattern: np.ndarray | None, share: float, channels: int = 32):
    """Each member's three hotspots: random feature vectors (what a photo background gives)
    and, for ``share`` of them, one window showing ``pattern`` (plus a little noise)."""
    spots, marked = [], []
    for i in range(n):
        vectors = [rng.gamma(1.0, 1.0, channels) for _ in range(3)]
        mark = pattern is not None and i < share * n
        if mark:
            vectors[1] = pattern + rng.normal(0, 0.1, channels).clip(0)
        spots.append([{"y": 0.5, "x": 0.5, "share": 0.2, "cells": 1, "context": "",
                       "features": encode_features(v)} for v in vectors])  # fmt: skip
        marked.append(mark)
    return spots, np.array(marked)


def test_a_pattern_the_model_sees_in_a_part_of_one_class_is_flagged_with_those_members():
    rng = np.random.default_rng(0)
    tag = rng.gamma(1.0, 1.0, 32) * 3.0
    spots, marked = _members(rng, 80, tag, 0.4)
    keys = [f"k{i:03d}" for i in range(80)]
    others, _ = _members(rng, 200, None, 0.0)
    [flag] = repeated_pattern_flags("vanilla", keys, spots, foreign_windows(others))
    assert flag["members"] == [k for k, m in zip(keys, marked) if m]
    e = flag["evidence"]
    assert e["descriptor"] == "features" and e["value"] > 0.9 and e["control"] < 0.3
    assert e["other_classes_rate"] == 0.0 and e["enrichment"] >= ENRICHMENT
    # The same pattern as common in the other classes: what every class shares, no flag.
    shared, _ = _members(rng, 200, tag, 0.4)
    assert repeated_pattern_flags("vanilla", keys, spots, foreign_windows(shared)) == []
    # Without features (lines of older runs) the rule compares pixels: nothing here.
    bare = [[{k: v for k, v in s.items() if k != "features"} | {"context": _flat_context()}
             for s in member] for member in spots]  # fmt: skip
    assert repeated_pattern_flags("vanilla", keys, bare) == []


def _flat_context() -> str:
    return encode_context(np.full((1, 1, 3), 0.5))


def test_class_rates_measure_the_pattern_in_every_class_alike():
    rng = np.random.default_rng(1)
    tag = rng.gamma(1.0, 1.0, 16) * 3
    own = np.stack([tag + rng.normal(0, 0.05, 16) if i % 2 else rng.gamma(1, 1, 16)
                    for i in range(40)])  # fmt: skip
    foreign = np.stack([rng.gamma(1, 1, 16) for _ in range(60)])
    inside, outside = class_rates(own[1::2], own, np.arange(40) // 2, foreign, np.arange(60))
    assert inside >= 0.9 and outside == 0.0  # the bar: 90% of the pattern's own windows
    z = standardised_features(own)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0)


def _part(cls: int, inside: float, method: str = "vanilla") -> dict:
    members = [f"c{cls}/{i}" for i in range(6)]
    return {"group": "class", "method": method, "id": cls, "flags": [],
            "clusters": [{"members": members}],
            "summary": {"count": 6, "metrics": {"energy_in_box": inside}}}  # fmt: skip


def test_a_class_whose_maps_leave_its_objects_far_more_than_the_others_is_flagged():
    parts = [_part(c, v) for c, v in enumerate([0.70, 0.72, 0.68, 0.71, 0.30])]
    out = context_flags(parts)
    assert [len(p["flags"]) for p in out] == [0, 0, 0, 0, 1]
    e = out[4]["flags"][0]["evidence"]
    assert e["outside_share"] == pytest.approx(0.70) and e["others_median"] == pytest.approx(0.295)
    assert e["value"] >= CONTEXT_Z and e["ratio"] == pytest.approx(0.705 / 0.30)
    assert out[4]["flags"][0]["members"] == sorted(f"c4/{i}" for i in range(6))
    assert parts[4]["flags"] == []  # the input is not changed
    # Two other classes are not enough to compare with; a class without boxes is skipped.
    assert all(not p["flags"] for p in context_flags(parts[2:]))
    nobox = [{**p, "summary": {"count": 6, "metrics": {}}} for p in parts]
    assert all(not p["flags"] for p in context_flags(nobox))


def _bg_logits(images: np.ndarray) -> np.ndarray:
    """A 'model' that says class 1 when the top-left pixel (background) is pure green."""
    green = (images[:, 0, 0, 0] == 0) & (images[:, 0, 0, 1] == 255) & (images[:, 0, 0, 2] == 0)
    return np.stack([np.zeros(len(images)), 10.0 * green], axis=1)


def test_the_background_swap_confirms_a_class_that_reads_its_background():
    rng = np.random.default_rng(2)
    obj = np.zeros((8, 8), bool)
    obj[3:6, 3:6] = True

    def subject(i: int, cls: int) -> Subject:
        image = rng.integers(40, 200, (8, 8, 3)).astype(np.uint8)
        if cls == 1:
            image[~obj] = (0, 255, 0)  # the class's shared background
        return Subject(f"k{i}", image, cls, {}, obj)

    members = [subject(i, 1) for i in range(8)]
    recipients = [subject(100 + i, 0) for i in range(8)]
    flag = {"kind": "context", "method": "vanilla", "evidence": {}}
    result, examples = confirm_flag(flag, 1, members, recipients, _bg_logits, seed=0)
    assert result["confirmed"] and result["logit_drop"]["effect"] == 10.0
    assert result["transplant_flip_rate"] == 1.0 and result["transplant_control_rate"] == 0.0
    assert (examples["member_after"][~obj] != (0, 255, 0)).any()
    assert (examples["member_after"][obj] == members[0].image[obj]).all()  # the object stays
    unboxed = [Subject(s.key, s.image, s.target, {}) for s in members]
    untested, _ = confirm_flag(flag, 1, unboxed, recipients, _bg_logits)
    assert not untested["confirmed"] and untested["verdict"].startswith("not tested")


def test_a_cluster_that_looks_at_the_frame_far_more_than_other_classes_is_flagged():
    def part(cls: int, mean: float, clusters: list[float]) -> dict:
        return {"group": "class", "method": "vanilla", "id": cls, "flags": [],
                "summary": {"count": 8, "metrics": {"border_mass": mean}},
                "clusters": [{"cluster": k, "members": [f"c{cls}/{k}/{i}" for i in range(5)],
                              "border_mass": b} for k, b in enumerate(clusters)]}  # fmt: skip

    # A thin frame: its cluster holds 0.45 of the map in the band (under any fixed 0.7);
    # the other classes' maps 0.18-0.22.
    parts = [part(0, 0.30, [0.45, 0.16]), *(part(c, 0.18 + 0.01 * c, [0.2]) for c in (1, 2, 3, 4))]
    out = frame_flags(parts)
    [flag] = out[0]["flags"]
    assert flag["kind"] == "border" and flag["cluster"] == 0
    assert flag["members"] == [f"c0/0/{i}" for i in range(5)]
    e = flag["evidence"]
    assert e["others_median"] == pytest.approx(0.205) and e["value"] >= FRAME_Z
    assert e["border_mass"] == 0.45
    assert all(not p["flags"] for p in out[1:])
    # A class of a few records is not compared (the bundled job's 12 images: 2-3 a class).
    few = [{**parts[0], "summary": {"count": 3, "metrics": {"border_mass": 0.30}}}, *parts[1:]]
    assert frame_flags(few)[0]["flags"] == []
    # A cluster the absolute rule flagged already is not flagged twice.
    parts[0]["flags"] = [{"kind": "border", "cluster": 0}]
    assert frame_flags(parts)[0]["flags"] == parts[0]["flags"]
