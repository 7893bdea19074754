"""sinks.py: safe paths, artifact scaling, and the sinks in a real (FnApiRunner) Beam pipeline
(atomic files and publishing: test_outputs.py, test_crash_safety.py)."""

from __future__ import annotations

import dataclasses
import glob
import io
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from pipeline.beam import sinks
from pipeline.elements import Failure, SaliencyRecord
from pipeline.maps import render
from pipeline.maps import views as maps
from pipeline.store import files as outputs
from pipeline.store import layout, records
from pipeline.testing.reliability import read_tree

RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"
H, W = 8, 8
METHODS = ("vanilla", "guided")


def make_record(key: str, *, rank: int = 0, seed: int = 0) -> SaliencyRecord:
    rng = np.random.default_rng(seed)
    return SaliencyRecord(
        key=key,
        source=f"/data/{key}",
        label=-1,
        sha256=f"{seed:064x}",
        pixels=rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8),
        prediction_class=seed,
        prediction_probability=0.5,
        top_k_classes=(seed, seed + 1),
        top_k_probabilities=(0.5, 0.25),
        target_class=seed + rank,
        target_rank=rank,
        target_score=1.5,
        gradients={m: rng.normal(size=(H, W, 3)).astype(np.float16) for m in METHODS},
        run_id="r",
        model_name="tiny",
        model_fingerprint="0" * 64,
    )


# --------------------------------------------------------------------------- safe_key

TRICKY = [
    "../../etc/passwd",
    "/etc/passwd",
    "a/b.jpg",
    "a_b.jpg",
    "a%2Fb.jpg",
    "a\\b.jpg",
    "a\x00b",
    "café au lait.jpg",
    "caf%C3%A9 au lait.jpg",
    ".",
    "..",
    "",
    "a//b",
    "a/_/b",
    "x" * 400,
    "x" * 401,
]


def test_safe_key_distinct_and_inside(tmp_path):
    out = [layout.safe_key(k) for k in TRICKY]
    assert len(set(out)) == len(TRICKY)
    root = os.path.realpath(tmp_path)
    for key, path in zip(TRICKY, out):
        assert "\\" not in path and "\x00" not in path and not path.startswith("/")
        segments = path.split("/")
        assert all(s not in ("", ".", "..") and len(s) <= 200 for s in segments), (key, path)
        resolved = os.path.realpath(os.path.join(root, path))
        assert resolved.startswith(root + os.sep), (key, path)


def test_safe_key_values():
    assert layout.safe_key("cats/001.jpg") == "cats/001.jpg"  # safe keys are kept as they are
    assert layout.safe_key("a/b.jpg") == "a/b.jpg"
    escaped = layout.safe_key("../x y")
    assert escaped.startswith("%2E%2E/x%20y~") and len(escaped.split("~")[1]) == 16
    assert layout.safe_key("a%2Fb.jpg").startswith("a%252Fb.jpg~")
    assert layout.safe_key("é").startswith("%C3%A9~")
    with pytest.raises(TypeError, match="str"):
        layout.safe_key(b"bytes")


def test_artifact_path_suffix_for_further_targets():
    assert layout.artifact_path(make_record("k"), "vanilla", "grid") == (
        "artifacts/k/vanilla_grid.png"
    )
    assert layout.artifact_path(make_record("k", rank=1, seed=4), "guided", "heatmap") == (
        "artifacts/k/guided_heatmap_t5.png"
    )


def test_transform_options_are_checked():
    with pytest.raises(ValueError, match="methods"):
        sinks.WriteArtifacts("/tmp/x", methods=["../evil"])
    with pytest.raises(ValueError, match="views"):
        sinks.WriteArtifacts("/tmp/x", methods=["vanilla"], views=["movie"])
    with pytest.raises(ValueError, match="num_shards"):
        sinks.WriteRecords("/tmp/x", num_shards=-1)
    for size in (0, 4097, 2.5, True):
        with pytest.raises(ValueError, match="min_artifact_size"):
            sinks.WriteArtifacts("/tmp/x", methods=["vanilla"], min_artifact_size=size)


def test_artifact_scale_brings_the_shorter_side_to_the_minimum():
    assert sinks.artifact_scale(16, 16, 192) == 12  # 192 / 16
    assert sinks.artifact_scale(64, 64, 192) == 3  # the shipped model: 64 * 3 = 192
    assert sinks.artifact_scale(10, 300, 192) == 20  # ceil(192 / 10): the shorter side
    assert sinks.artifact_scale(50, 50, 192) == 4  # ceil(3.84)
    assert sinks.artifact_scale(224, 224, 192) == 1  # already large enough
    assert sinks.artifact_scale(8, 8, 1) == 1
    with pytest.raises(ValueError, match="empty"):
        sinks.artifact_scale(0, 8, 192)


@pytest.mark.parametrize("views", [("heatmap", "overlay", "grid"), ("grid",), ("overlay",)])
def test_render_artifacts_equal_the_public_render_functions(views):
    # The sink normalises each map once for all views; the bytes must be what the public
    # one-view functions give on their own.
    record = make_record("a", seed=3)
    options = {"percentile": 97.0, "alpha": 0.3, "cmap": "viridis", "scale": 2}
    out = sinks.render_artifacts(record, "guided", views, **options)
    assert tuple(out) == views
    g, pixels = record.gradients["guided"], record.pixels
    abs_map = maps.compute_views(g, percentile=97.0, views=("abs",))["abs"]
    expected = {
        "heatmap": render.heatmap_png(abs_map, cmap="viridis", scale=2),
        "overlay": render.overlay_png(pixels, abs_map, 0.3, cmap="viridis", scale=2),
        "grid": render.annotated_grid_png(
            render.grid_panels(pixels, g, percentile=97.0, cmap="viridis"),
            info=sinks.grid_info(record, "guided"),
            scales=maps.view_scales(g, 97.0),
            cmap="viridis",
            scale=2,
        ),
    }
    for view in views:
        assert out[view] == expected[view], view
    with pytest.raises(ValueError, match="'sketch'"):
        sinks.render_artifacts(record, "guided", ("sketch",), **options)


# --------------------------------------------------------------------------- pipelines


def _run(output_dir: str, items: list[SaliencyRecord], failures: list[Failure]) -> None:
    with beam.Pipeline(options=PipelineOptions(flags=[], runner=RUNNER)) as p:
        recs = p | "Records" >> beam.Create(items)
        recs | "WriteRecords" >> sinks.WriteRecords(output_dir, num_shards=2)
        entries = recs | "WriteArtifacts" >> sinks.WriteArtifacts(output_dir, methods=METHODS)
        entries | "WriteManifest" >> sinks.WriteManifest(output_dir)
        failed = p | "Failures" >> beam.Create(failures, reshuffle=False)
        failed | "WriteFailures" >> sinks.WriteFailures(output_dir)


def _png(path: str) -> np.ndarray:
    with open(path, "rb") as f, Image.open(io.BytesIO(f.read())) as img:
        return np.asarray(img)


def test_pipeline_writes_everything(tmp_path):
    out_dir = str(tmp_path / "out")
    items = [
        make_record("z/last.jpg", seed=1),
        make_record("../evil name.png", seed=2),
        make_record("a/first.jpg", seed=3),
        make_record("a/first.jpg", rank=1, seed=3),
    ]
    failures = [
        Failure(key="q.jpg", source="/data/q.jpg", stage="decode", error="bad"),
        Failure(key="b.jpg", source="/data/b.jpg", stage="decode", error="truncated"),
    ]
    _run(out_dir, items, failures)

    # Records: two shards, each record's bytes exactly what encode() gives.
    shards = sorted(os.listdir(os.path.join(out_dir, "records")))
    assert shards == [f"saliency-0000{i}-of-00002.tfrecord" for i in range(2)]
    back = {r.record_id: r for r in records.read(os.path.join(out_dir, "records", "*"))}
    assert set(back) == {r.record_id for r in items}
    for item in items:
        got = back[item.record_id]
        assert got.target_class == item.target_class and got.sha256 == item.sha256
        for m in METHODS:
            assert got.gradients[m].tobytes() == item.gradients[m].tobytes()
        np.testing.assert_array_equal(got.image, item.pixels)

    # Manifest: sorted by record_id, complete, and its paths hold decodable PNGs.
    manifest = outputs.read_jsonl(os.path.join(out_dir, "manifest.jsonl"))
    ids = [row["record_id"] for row in manifest]
    assert ids == sorted(r.record_id for r in items)
    by_id = {r.record_id: r for r in items}
    for row in manifest:
        item = by_id[row["record_id"]]
        assert row["key"] == item.key and row["target_rank"] == item.target_rank
        assert row["prediction_probability"] == 0.5 and row["label"] == -1
        assert set(row["artifacts"]) == set(METHODS)
        for method, views in row["artifacts"].items():
            assert set(views) == set(sinks.ARTIFACT_VIEWS)
            for view, rel in views.items():
                assert rel == layout.artifact_path(item, method, view)
                path = os.path.realpath(os.path.join(out_dir, rel))
                assert path.startswith(os.path.realpath(out_dir) + os.sep)
                pixels = _png(path)
                grid = view == "grid"
                width = 5 * W + 4 * render.GRID_GAP if grid else W
                height = H + (render.GRID_HEADER + render.GRID_FOOTER if grid else 0)
                assert pixels.shape == (height, width, 3)
            grid = _png(os.path.join(out_dir, views["grid"]))
            top = render.GRID_HEADER
            np.testing.assert_array_equal(grid[top : top + H, :W], item.pixels)
    rank1 = next(r for r in manifest if r["target_rank"] == 1)
    assert rank1["artifacts"]["vanilla"]["heatmap"].endswith("vanilla_heatmap_t4.png")
    evil = next(r for r in manifest if r["key"] == "../evil name.png")
    assert evil["artifacts"]["guided"]["grid"].startswith("artifacts/%2E%2E/evil%20name.png~")

    rows = outputs.read_jsonl(os.path.join(out_dir, "failures.jsonl"))
    assert [r["key"] for r in rows] == ["b.jpg", "q.jpg"]
    assert rows[0] == {
        "key": "b.jpg",
        "source": "/data/b.jpg",
        "stage": "decode",
        "error": "truncated",
    }
    assert not any(".tmp-" in name for name in read_tree(out_dir))

    # A rerun gives byte-identical artifacts, manifest and records; no failures -> empty file.
    before = read_tree(out_dir)
    _run(out_dir, items[::-1], [])
    after = read_tree(out_dir)
    assert after.pop("failures.jsonl") == b""
    before.pop("failures.jsonl")
    assert {k: v for k, v in after.items() if not k.startswith("records")} == {
        k: v for k, v in before.items() if not k.startswith("records")
    }
    # Records hold exactly encode(item) for every input, whatever the shard split.
    raw = sorted(
        r.numpy() for r in tf.data.TFRecordDataset(sorted(glob.glob(f"{out_dir}/records/*")))
    )
    assert raw == sorted(records.encode(item) for item in items)


def test_the_grid_info_line_names_the_classes():
    record = make_record("a", seed=3)
    assert sinks.grid_info(record, "guided") == (
        f"a | class {record.prediction_class}, p = {record.prediction_probability:.3f} | guided"
    )
    named = dataclasses.replace(record, prediction_name="cat", target_class=9, target_name="dog")
    assert sinks.grid_info(named, "vanilla") == (
        f"a | class {record.prediction_class} cat, p = {record.prediction_probability:.3f} "
        "| explained: class 9 dog | vanilla"
    )
