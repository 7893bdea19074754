"""End-to-end DirectRunner runs over real photos, outputs read back and checked.

One module-scoped workspace: real photos (downscaled, one in a sub-folder), a corrupt
file, and a tiny guided-patchable classifier saved as .keras. Three runs: in-process,
a rerun into a fresh dir, and multi_processing with two workers.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from pipeline.beam.run import run
from pipeline.config.files import load_config
from pipeline.engine.explainer import Explainer
from pipeline.maps import render
from pipeline.store import decode, records

pytestmark = pytest.mark.slow  # end-to-end runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = os.path.join(ROOT, "examples", "photos")
SIZE = 16
METHODS = ("vanilla", "guided", "smoothgrad")


def _tiny_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.ReLU(max_value=6.0)(keras.layers.Conv2D(6, 3, padding="same")(x))
    x = keras.layers.Activation("swish")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    images = root / "images"
    (images / "sub dir").mkdir(parents=True)
    names = ["chelsea.png", "coffee.png", "rocket.jpg", "grace_hopper.jpg", "astronaut.png"]
    for i, name in enumerate(names):
        img = Image.open(os.path.join(PHOTOS, name)).convert("RGB")
        img.thumbnail((48, 48))
        folder = images / "sub dir" if i == 0 else images
        img.save(folder / name)
    (images / "broken.jpg").write_bytes(b"<html>not an image</html>")
    model_path = root / "tiny.keras"
    _tiny_model().save(model_path)
    return root


def _config(workspace, out: str, *extra: str):
    return load_config(
        None,
        [
            f"model.name={workspace / 'tiny.keras'}",
            "model.preprocessing=unit",
            f"source.pattern={workspace / 'images'}/**",
            f"saliency.methods=[{','.join(METHODS)}]",
            "saliency.samples=6",
            "saliency.sample_batch_size=8",
            "saliency.precision=float32",
            "batch.max_batch_size=3",
            f"output.dir={workspace / out}",
            "run.max_failure_fraction=0.5",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def first_run(workspace):
    config = _config(workspace, "out1")
    return config, run(config, ["--runner=DirectRunner"])


def _records(out_dir) -> list[records.DecodedRecord]:
    return sorted(records.read(f"{out_dir}/records/*.tfrecord"), key=lambda r: r.key)


def _raw_records(out_dir) -> list[bytes]:
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(f"{out_dir}/records/*.tfrecord"))
    return sorted(bytes(r.numpy()) for r in tf.data.TFRecordDataset(files))


def test_summary_reconciles_and_failures_are_listed(first_run):
    config, summary = first_run
    assert summary.inputs == 6
    assert summary.images_written == 5
    assert summary.images_failed == 1
    assert summary.reconciled
    out = config.output.dir
    failures = [json.loads(line) for line in Path(f"{out}/failures.jsonl").read_text().splitlines()]
    assert [f["key"] for f in failures] == ["broken.jpg"]
    assert failures[0]["stage"] == "decode"
    saved = json.loads(Path(f"{out}/summary.json").read_text())
    assert saved["images_written"] == 5 and saved["inputs"] == 6


def test_records_equal_what_the_engine_gives(first_run, workspace):
    config, _ = first_run
    decoded = _records(config.output.dir)
    assert [r.key for r in decoded] == sorted(
        ["astronaut.png", "coffee.png", "grace_hopper.jpg", "rocket.jpg", "sub dir/chelsea.png"]
    )
    from pipeline.engine.models import ModelSpec, load_model

    loaded = load_model(
        ModelSpec(name=str(workspace / "tiny.keras"), preprocessing="unit", weights=None)
    )
    explainer = Explainer(loaded.model, samples=6, noise=0.2, seed=0, batch_size=8)
    for rec in decoded:
        data = Path(rec.source).read_bytes()
        pixels = decode.resize(
            decode.decode_image(data, channels=3, max_pixels=10**8), (SIZE, SIZE), "resize"
        )
        np.testing.assert_array_equal(rec.image, pixels)
        x = np.asarray(loaded.preprocess(pixels[None].astype(np.float32)))
        logits = explainer.logits(x)
        assert rec.prediction_class == int(np.argmax(logits[0]))
        assert rec.target_class == rec.prediction_class
        assert rec.methods == METHODS
        for method in METHODS:
            want = explainer.explain(x, method, targets=np.array([rec.target_class])).gradients[0]
            got = rec.gradients[method].astype(np.float32)
            scale = float(np.abs(want).max())
            assert scale > 0
            np.testing.assert_allclose(got, want, atol=2e-3 * scale, rtol=2e-2)
            for view in ("abs", "positive", "negative"):
                m = rec.maps[method][view]
                assert m.shape == (SIZE, SIZE) and m.min() >= 0.0 and m.max() <= 1.0
        # guided differs from vanilla on a relu net: the patch is really applied
        assert not np.allclose(rec.gradients["guided"], rec.gradients["vanilla"])


def test_pngs_decode_and_manifest_reconciles(first_run):
    config, summary = first_run
    out = config.output.dir
    rows = [json.loads(line) for line in Path(f"{out}/manifest.jsonl").read_text().splitlines()]
    assert len(rows) == summary.records == 5
    for row in rows:
        assert set(row["artifacts"]) == set(METHODS)
        for method, views in row["artifacts"].items():
            assert set(views) == {"heatmap", "overlay", "grid"}, method
            for rel in views.values():
                path = os.path.join(out, rel)
                assert os.path.realpath(path).startswith(os.path.realpath(out))
                img = Image.open(io.BytesIO(Path(path).read_bytes()))
                img.load()
                assert img.width >= SIZE and img.height >= SIZE


def test_small_model_artifacts_are_upscaled_to_min_artifact_size(first_run):
    config, _ = first_run
    out = config.output.dir
    assert config.output.min_artifact_size == 192  # the default
    f = 12  # ceil(192 / 16): the 16x16 model's maps, nearest-neighbour upscaled
    by_key = {r.key: r for r in _records(out)}
    rows = [json.loads(line) for line in Path(f"{out}/manifest.jsonl").read_text().splitlines()]
    for row in rows:
        views = row["artifacts"]["vanilla"]
        with Image.open(os.path.join(out, views["grid"])) as img:
            grid = np.asarray(img.convert("RGB"))
        top = render.GRID_HEADER  # the info line, the titles and the scales
        assert grid.shape == (top + SIZE * f + render.GRID_FOOTER,
                              5 * SIZE * f + 4 * render.GRID_GAP, 3)  # fmt: skip
        # The first panel is the model-input image, each pixel an f x f block of itself.
        original = grid[top : top + SIZE * f, : SIZE * f]
        np.testing.assert_array_equal(original[::f, ::f], by_key[row["key"]].image)
        np.testing.assert_array_equal(
            original, np.repeat(np.repeat(original[::f, ::f], f, 0), f, 1)
        )
        for view in ("heatmap", "overlay"):
            with Image.open(os.path.join(out, views[view])) as img:
                assert (img.width, img.height) == (SIZE * f, SIZE * f)


def test_rerun_into_fresh_dir_gives_identical_records(first_run, workspace):
    config, _ = first_run
    again = _config(workspace, "out2")
    summary = run(again, ["--runner=DirectRunner"])
    assert summary.images_written == 5
    assert _raw_records(again.output.dir) == _raw_records(config.output.dir)


def test_multi_processing_equals_in_process(first_run, workspace):
    config, _ = first_run
    multi = _config(workspace, "out_mp")
    summary = run(
        multi,
        ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
    )
    assert summary.images_written == 5 and summary.images_failed == 1
    assert _raw_records(multi.output.dir) == _raw_records(config.output.dir)
    shutil.rmtree(multi.output.dir)


def test_tfrecord_input_with_label_targets(workspace):
    import tensorflow as tf

    shard = workspace / "input.tfrecord"
    photos = sorted((workspace / "images").glob("*.png"))
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for i, path in enumerate(photos):
            feature = {
                "image/encoded": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[path.read_bytes()])
                ),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
                "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.name.encode()])),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    config = _config(
        workspace,
        "out_tfrecord",
        "source.kind=tfrecord",
        f"source.pattern={shard}",
        "source.key_key=id",
        "saliency.target=label",
        "saliency.methods=[vanilla]",
    )
    summary = run(config, ["--runner=DirectRunner"])
    assert summary.images_written == len(photos) and summary.images_failed == 0
    decoded = _records(config.output.dir)
    assert [r.key for r in decoded] == sorted(p.name for p in photos)
    for rec in decoded:
        want = [p.name for p in photos].index(rec.key)
        assert rec.label == want and rec.target_class == want
