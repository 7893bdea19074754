"""audit.slices: TFMA-like slices over the inputs' metadata (TFRecord features, the sidecar's
fields, the folder), their numbers against hand-filtered subsets, and slice drift rules."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from pipeline.audit.dataset.slices import record_columns, slice_id, slice_ids
from pipeline.audit.pipeline import run_audit
from pipeline.audit.record.rows import parse_annotations
from pipeline.audit.report.drift import check_rules, compare, parse_rule
from pipeline.beam.run import run
from pipeline.config.audit import slice_spec
from pipeline.config.checks import ConfigError
from pipeline.config.files import load_config
from pipeline.store.files import read_jsonl
from pipeline.store.metadata import example_metadata
from pipeline.testing.reliability import base_overrides, noise_png, read_records


def test_specs_parse_and_bad_ones_name_the_problem():
    assert slice_spec("site") == (("site", None),)
    assert slice_spec(" site = B , camera ") == (("site", "B"), ("camera", None))
    config = load_config(None, ["audit.slices=[site, 'site = B,camera']"])
    assert config.audit.slices == ("site", "site=B,camera")
    for bad, why in (("site,site", "appears twice"), ("=B", "COLUMN=VALUE"),
                     ("site=", "COLUMN=VALUE")):  # fmt: skip
        with pytest.raises(ConfigError, match=why):
            load_config(None, [f"audit.slices=['{bad}']"])


def test_a_record_falls_in_the_slice_its_values_name():
    columns = record_columns("ward3/x.png", {"site": "A", "camera": "2"}, {"site": "B"})
    assert columns == {"folder": "ward3", "site": "B", "camera": "2"}  # the sidecar wins
    assert record_columns("x.png", {}, {})["folder"] == "."
    assert slice_id(slice_spec("site,camera"), columns) == "site=B,camera=2"
    assert slice_id(slice_spec("site=A"), columns) is None
    assert slice_id(slice_spec("scanner"), columns) is None  # no such column
    specs = (slice_spec("site"), slice_spec("site=B"), slice_spec("folder"))
    assert slice_ids(specs, columns) == ["site=B", "folder=ward3"]


def test_columns_come_from_single_valued_features_and_sidecar_fields():
    example = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\x89PNG"])),
        "site": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"B"])),
        "camera": tf.train.Feature(int64_list=tf.train.Int64List(value=[2])),
        "exposure": tf.train.Feature(float_list=tf.train.FloatList(value=[0.25])),
        "tags": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a", b"b"])),
        "blob": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\xff\xfe"])),
    }))  # fmt: skip
    got = example_metadata(example.features.feature, skip={"image/encoded"})
    assert got == (("camera", "2"), ("exposure", "0.25"), ("site", "B"))
    sidecar = parse_annotations('{"key": "k", "boxes": [], "site": "C", "night": true, '
                                '"label": 2, "extra": [1]}')  # fmt: skip
    assert sidecar["k"].columns == (("label", "2"), ("night", "true"), ("site", "C"))


def test_slice_drift_rules():
    rule = parse_rule("pointing@guided[ site = B ]:-0.05")
    assert (rule.metric, rule.method, rule.slice, rule.change) == ("pointing", "guided", "site=B",
                                                                   -0.05)  # fmt: skip
    assert rule.text == "pointing@guided[site=B]:-0.05"
    for bad in ("flags[site=B]:+0", "pointing[site]:-0.1"):
        with pytest.raises(ValueError, match="slice"):
            parse_rule(bad)

    def audit(pointing_b: float) -> dict:
        def entry(p: float) -> dict:
            return {"count": 4, "methods": {"guided": {"metrics": {"pointing": p}}}}

        return {"methods": {}, "classes": {}, "records": 8,
                "slices": {"site=A": entry(0.8), "site=B": entry(pointing_b)}}  # fmt: skip

    drift = compare(audit(0.8), audit(0.7))
    assert drift["slices"]["site=B"]["guided"]["pointing"]["change"] == pytest.approx(-0.1)
    broken = check_rules(drift, [rule, parse_rule("pointing[site=A]:-0.05")])
    assert len(broken) == 1 and "pointing of guided[site=B] went from 0.8 to 0.7" in broken[0]
    missing = check_rules(drift, [parse_rule("pointing[site=C]:-0.05")])
    assert "slice 'site=C' is not in both audits" in missing[0]


def _feature(value) -> tf.train.Feature:
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


@pytest.mark.slow
def test_an_audit_with_two_slices_equals_the_hand_filtered_subsets(tmp_path, tiny_model):
    sites = ["A", "A", "B", "B", "B", "A", "B", "B", "A", "B"]
    cameras = [1, 2, 1, 2, 2, 1, 1, 2, 2, 1]
    data = tmp_path / "data.tfrecord"
    with tf.io.TFRecordWriter(str(data)) as writer:
        for i, (site, camera) in enumerate(zip(sites, cameras)):
            feature = {"image/encoded": _feature(noise_png(i)), "image/key": _feature(b"k%d" % i),
                       "image/class/label": _feature(i % 3), "site": _feature(site.encode()),
                       "camera": _feature(camera)}  # fmt: skip
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())  # fmt: skip
    out = str(tmp_path / "out")
    overrides = [*base_overrides(tiny_model, str(data), out), "source.kind=tfrecord",
                 "source.key_key=image/key", "saliency.methods=[vanilla, guided]",
                 "audit.slices=[site, 'site=B,camera']", "audit.sanity_samples=0",
                 "audit.faithfulness_steps=0"]  # fmt: skip
    run(load_config(None, overrides))
    records = {r.key: r for r in read_records(out)}
    assert records["k2"].metadata == {"camera": "1", "site": "B"}  # carried in the records
    audit = run_audit(load_config(None, overrides)).audit
    assert sorted(audit["slices"]) == ["site=A", "site=B", "site=B,camera=1", "site=B,camera=2"]

    rows = read_jsonl(os.path.join(out, "audit", "rows.jsonl"))
    for sid, entry in audit["slices"].items():
        want = dict(part.split("=") for part in sid.split(","))
        keys = {k for k, r in records.items() if all(r.metadata[c] == v for c, v in want.items())}
        assert entry["count"] == len(keys)
        right = [records[k].label == records[k].prediction_class for k in keys]
        assert entry["accuracy"] == pytest.approx(np.mean(right))
        confidence = np.mean([records[k].prediction_probability for k in keys])
        assert entry["mean_confidence"] == pytest.approx(confidence, rel=1e-6)
        for method in ("vanilla", "guided"):
            mine = [r for r in rows if r["key"] in keys and r["method"] == method]
            assert len(mine) == len(keys)
            for metric in ("gini", "entropy", "spread", "border_mass"):
                got = entry["methods"][method]["metrics"][metric]
                assert got == pytest.approx(np.mean([r[metric] for r in mine]), rel=1e-6)
    report = (tmp_path / "out" / "audit" / "report.html").read_text(encoding="utf-8")
    assert '<table id="slices">' in report and "site=B,camera=2" in report
    mean_map = audit["slices"]["site=B,camera=2"]["methods"]["vanilla"]["mean_map"]
    assert os.path.exists(os.path.join(out, mean_map))
    name = mean_map.rsplit("/", 1)[-1]  # safe in a URL as it is: the report's <img> loads it
    assert name.startswith("slice_site_B_camera_2-") and re.fullmatch(r"[\w.-]+", name)
    written = json.loads((tmp_path / "out" / "audit" / "audit.json").read_text())
    assert written["slices"].keys() == audit["slices"].keys()
