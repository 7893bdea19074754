"""The audit's per-record work done in the job (issue 18): row lines published with the
records, an incremental audit equal to a from-scratch one, lines rebuilt from the records
of an output dir that has none, and the job's lines equal to the rebuilt ones byte for
byte."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.audit.pipeline import run_audit
from pipeline.audit.record.lines import line_maker
from pipeline.audit.sources import plan_lines
from pipeline.beam.run import run
from pipeline.config.files import load_config
from pipeline.store import records
from pipeline.store.layout import ROW_SHARDS
from pipeline.store.manifest import committed_sets, shard_files
from pipeline.testing.reliability import (
    base_overrides,
    check_complete,
    committed_row_ids,
    noise_png,
    same_json,
    write_files,
)

pytestmark = pytest.mark.slow  # real runs and audits

KEYS = [f"img_{i:02d}.png" for i in range(12)]


def _setup(tmp_path, tiny_model, name: str, keys: list[str], *extra: str) -> list[str]:
    data, out = tmp_path / f"{name}_in", tmp_path / f"{name}_out"
    write_files(str(data), {k: noise_png(KEYS.index(k)) for k in keys})
    sidecar = tmp_path / "boxes.jsonl"
    if not sidecar.exists():  # boxes for half of the images: localisation numbers too
        sidecar.write_text("".join(json.dumps({"key": k, "boxes": [[2, 3, 14, 20]],
                                               "site": "AB"[i % 2]}) + "\n"
                                   for i, k in enumerate(KEYS[::2])))  # fmt: skip
    return [*base_overrides(tiny_model, f"{data}/*.png", str(out)),
            "saliency.methods=[vanilla, guided]", "run.incremental=true", "audit.enabled=true",
            "audit.sanity_samples=0", "audit.faithfulness_fraction=1.0",
            "audit.faithfulness_steps=4", f"audit.annotations={sidecar}",
            "audit.slices=[site]", *extra]  # fmt: skip


def _lines(out: str) -> dict[str, bytes]:
    paths = shard_files(out, set(committed_sets(out)), ROW_SHARDS)
    return {json.loads(raw)["record_id"]: raw for p in paths for raw in records.read_raw(p)}


def test_an_incremental_audit_equals_the_audit_from_scratch(tmp_path, tiny_model):
    grown = _setup(tmp_path, tiny_model, "grown", KEYS[:9])
    first = run(load_config(None, grown))
    assert first.images_written == 9
    write_files(str(tmp_path / "grown_in"), {k: noise_png(KEYS.index(k)) for k in KEYS[9:]})
    second = run(load_config(None, grown))
    assert (second.images_written, second.images_skipped) == (3, 9)  # 3 new lines only
    out = str(tmp_path / "grown_out")
    check_complete(out)  # each record's line exactly once
    assert committed_row_ids(out) == KEYS
    settings = line_maker(load_config(None, grown)).settings
    assert plan_lines(out, settings).rebuilt_sets == ()  # nothing re-measured
    incremental = run_audit(load_config(None, grown)).audit

    scratch = _setup(tmp_path, tiny_model, "scratch", KEYS)
    run(load_config(None, scratch))
    fresh = run_audit(load_config(None, scratch)).audit
    assert incremental["records"] == fresh["records"] == 12
    assert sorted(fresh["slices"]) == ["site=A", "site=B"]
    assert fresh["methods"]["vanilla"]["localisation"]["n"] == 6
    assert fresh["methods"]["vanilla"]["faithfulness"]["n"] == 12
    same_json(incremental, fresh)

    # The job's lines are the lines the records give, byte for byte, but for the model's
    # features at each hotspot (engine.features), which only the job has: the records do
    # not store the feature map, so lines rebuilt from them match hotspots by pixels.
    config = load_config(None, scratch)
    maker = line_maker(config)
    published = _lines(str(tmp_path / "scratch_out"))
    for record in records.read(str(tmp_path / "scratch_out")):
        line = json.loads(published[record.record_id])
        spots = [s for entry in line["methods"] for s in entry["hotspots"]]
        assert spots and all(s.pop("features") for s in spots), record.key
        assert maker.line(record) == json.dumps(line, sort_keys=True).encode(), record.key


def test_an_output_dir_without_lines_gets_them_rebuilt_from_its_records(tmp_path, tiny_model):
    # No curves here: a run with the audit off computes none, so both sides go without.
    off = _setup(tmp_path, tiny_model, "off", KEYS, "audit.enabled=false",
                 "audit.faithfulness_steps=0")  # fmt: skip
    run(load_config(None, off))
    out = str(tmp_path / "off_out")
    assert not os.path.exists(os.path.join(out, ROW_SHARDS.directory))
    on = [*off, "audit.enabled=true"]
    settings = line_maker(load_config(None, on)).settings
    assert len(plan_lines(out, settings).rebuilt_sets) == 1
    rebuilt = run_audit(load_config(None, on)).audit

    # The rebuilt lines were kept: the next audit reads them and measures nothing again.
    assert plan_lines(out, settings).rebuilt_sets == ()
    assert committed_row_ids(out) == KEYS
    same_json(run_audit(load_config(None, on)).audit, rebuilt)
    # A set whose lines are incomplete (a shard gone) is rebuilt whole, not read in part.
    twin = shard_files(out, set(committed_sets(out)), ROW_SHARDS)[0]
    os.remove(twin)
    assert len(plan_lines(out, settings).rebuilt_sets) == 1
    same_json(run_audit(load_config(None, on)).audit, rebuilt)
    assert plan_lines(out, settings).rebuilt_sets == ()

    with_lines = _setup(tmp_path, tiny_model, "lines", KEYS, "audit.faithfulness_steps=0")
    run(load_config(None, with_lines))
    assert plan_lines(str(tmp_path / "lines_out"), settings).rebuilt_sets == ()
    same_json(rebuilt, run_audit(load_config(None, with_lines)).audit)
    # Other settings (a new map size) are not mixed in: those lines are rebuilt, and
    # replace the old ones.
    bigger = [*with_lines, "audit.map_size=8"]
    other = line_maker(load_config(None, bigger)).settings
    assert len(plan_lines(str(tmp_path / "lines_out"), other).rebuilt_sets) == 1
    assert run_audit(load_config(None, bigger)).audit["map_size"] == 8
    assert plan_lines(str(tmp_path / "lines_out"), other).rebuilt_sets == ()
    assert committed_row_ids(str(tmp_path / "lines_out")) == KEYS
