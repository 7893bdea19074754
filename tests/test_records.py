"""records.py: encode -> parse round trip, the parse spec, read() over shards."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from pipeline.elements import SaliencyRecord
from pipeline.maps import views as maps
from pipeline.store import gradient_codec, records

H, W = 6, 5


def make_record(key: str = "cats/001.jpg", *, rank: int = 0, channels: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    gradients = {
        "vanilla": rng.normal(size=(H, W, channels)).astype(np.float16),
        "guided": (rng.normal(size=(H, W, channels)) * 1e-3).astype(np.float16),
    }
    return SaliencyRecord(
        key=key,
        source=f"/data/{key}",
        label=3,
        sha256="ab" * 32,
        pixels=rng.integers(0, 256, size=(H, W, channels), dtype=np.uint8),
        prediction_class=7,
        prediction_probability=0.75,
        top_k_classes=(7, 3, 1),
        top_k_probabilities=(0.75, 0.125, 0.0625),
        target_class=7 if rank == 0 else 3,
        target_rank=rank,
        target_score=12.5,
        gradients=gradients,
        run_id="run-1",
        model_name="tiny",
        model_fingerprint="f" * 64,
        recomputed=2,
    )


def test_round_trip_is_exact():
    record = make_record()
    data = records.encode(record)
    out = records.parse(data)
    assert (out.key, out.source, out.sha256) == (record.key, record.source, record.sha256)
    assert (out.height, out.width, out.label) == (H, W, 3)
    assert (out.prediction_class, out.prediction_probability) == (7, 0.75)
    np.testing.assert_array_equal(out.top_k_classes, [7, 3, 1])
    np.testing.assert_array_equal(out.top_k_probabilities, [0.75, 0.125, 0.0625])
    assert (out.target_class, out.target_rank, out.target_score) == (7, 0, 12.5)
    assert out.methods == ("vanilla", "guided")
    assert (out.run_id, out.model_name, out.model_fingerprint) == ("run-1", "tiny", "f" * 64)
    assert out.recomputed == 2 and out.record_id == record.key
    for method, g in record.gradients.items():
        assert out.gradients[method].dtype == np.float16
        assert out.gradients[method].tobytes() == g.tobytes()
        expected = maps.compute_views(g, views=records.RECORD_VIEWS)
        assert set(out.maps[method]) == set(records.RECORD_VIEWS)
        for view, m in expected.items():
            assert out.maps[method][view].dtype == np.float32
            np.testing.assert_array_equal(out.maps[method][view], m)
    np.testing.assert_array_equal(out.image, record.pixels)
    assert records.encode(record) == data  # deterministic bytes


def test_views_are_derived_on_read_and_records_that_store_them_keep_theirs():
    record = make_record()
    lean = records.encode(record)
    feature = tf.train.Example.FromString(lean).features.feature
    assert "saliency/vanilla/abs" not in feature  # a third of a method's bytes: not stored
    assert feature[records.PERCENTILE_KEY].float_list.value[0] == 99.0
    g = record.gradients["guided"]
    at90 = records.parse(records.encode(record, percentile=90.0)).maps["guided"]
    for view, m in maps.compute_views(g, percentile=90.0, views=records.RECORD_VIEWS).items():
        np.testing.assert_array_equal(at90[view], m)  # the writer's percentile, on read
    # A record written before views were derived stores them: it is read as stored.
    old = tf.train.Example.FromString(lean)
    stored = np.full((H, W), 0.5, np.float32)
    for view in records.RECORD_VIEWS:
        key = records.method_keys("vanilla")[view]
        old.features.feature[key].bytes_list.value.append(records.serialize_array(stored))
    out = records.parse(old.SerializeToString())
    assert all((out.maps["vanilla"][v] == 0.5).all() for v in records.RECORD_VIEWS)


def test_without_image_grayscale_and_further_target():
    record = make_record(channels=1, rank=1)
    out = records.parse(records.encode(record, include_image=False))
    assert out.image is None
    assert out.gradients["vanilla"].shape == (H, W, 1)
    assert out.record_id == "cats/001.jpg#target=3" == record.record_id
    with_image = records.parse(records.encode(record))
    np.testing.assert_array_equal(with_image.image, record.pixels)


def test_tensor_bytes_match_serialize_tensor():
    g = make_record().gradients["vanilla"]
    data = records.serialize_array(g)
    assert data == tf.io.serialize_tensor(g).numpy()
    np.testing.assert_array_equal(tf.io.parse_tensor(data, tf.float16).numpy(), g)
    one = np.zeros((1, 1, 1), np.float32)
    assert records.serialize_array(one) == tf.io.serialize_tensor(one).numpy()
    with pytest.raises(TypeError, match="float16"):
        records.serialize_array(np.zeros(3, np.int32))


def test_parse_spec_with_tf():
    record = make_record()
    data = records.encode(record)
    spec = records.features_for(["vanilla", "guided"])
    assert set(records.FEATURES) < set(spec)
    parsed = tf.io.parse_single_example(data, spec)
    assert parsed["image/key"].numpy() == b"cats/001.jpg"
    assert int(parsed["target/class"]) == 7 and int(parsed["image/height"]) == H
    np.testing.assert_array_equal(parsed["prediction/top_k/classes"].numpy(), [7, 3, 1])
    assert list(parsed["saliency/methods"].numpy()) == [b"vanilla", b"guided"]
    assert parsed[records.ENCODING_KEY].numpy() == b"compact"
    g = gradient_codec.tf_decode(
        parsed["saliency/guided/gradient"], parsed[records.ENCODING_KEY],
        parsed["image/height"], parsed["image/width"],
    )  # fmt: skip
    assert g.dtype == tf.float16 and g.numpy().tobytes() == record.gradients["guided"].tobytes()
    as_tensor = tf.io.parse_single_example(records.encode(record, gradient_encoding="tensor"), spec)
    g = tf.io.parse_tensor(as_tensor["saliency/guided/gradient"], tf.float16).numpy()
    assert g.tobytes() == record.gradients["guided"].tobytes()
    assert "saliency/vanilla/abs" not in parsed  # views are derived from the gradient
    assert float(parsed[records.PERCENTILE_KEY]) == 99.0
    image = tf.io.decode_png(parsed["image/encoded"]).numpy()
    np.testing.assert_array_equal(image, record.pixels)
    # The fixed keys alone parse too; a record without the image gets the default b"".
    fixed = tf.io.parse_single_example(
        records.encode(record, include_image=False), records.FEATURES
    )
    assert fixed["image/encoded"].numpy() == b""


def test_read_over_two_shards(tmp_path):
    keys = ["a", "b", "c", "d", "e"]
    for shard, chunk in enumerate((keys[:2], keys[2:])):
        path = tmp_path / f"saliency-{shard:05d}-of-00002.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for i, key in enumerate(chunk):
                writer.write(records.encode(make_record(key, seed=i)))
    out = list(records.read(str(tmp_path / "saliency-*.tfrecord")))
    assert [r.key for r in out] == keys
    assert (
        out[3].gradients["vanilla"].tobytes()
        == make_record("d", seed=1).gradients["vanilla"].tobytes()
    )
    with pytest.raises(FileNotFoundError, match="no TFRecord"):
        records.read(str(tmp_path / "nothing-*.tfrecord"))


def test_encode_validates():
    record = make_record()
    bad_shape = dataclasses.replace(record, gradients={"vanilla": np.zeros((H + 1, W, 3))})
    with pytest.raises(ValueError, match="shape"):
        records.encode(bad_shape)
    bad_name = dataclasses.replace(record, gradients={"a/b": record.gradients["vanilla"]})
    with pytest.raises(ValueError, match="method name"):
        records.encode(bad_name)
    bad_topk = dataclasses.replace(record, top_k_probabilities=(0.5,))
    with pytest.raises(ValueError, match="top_k"):
        records.encode(bad_topk)
    with pytest.raises(ValueError, match="not a saliency record"):
        records.parse(tf.train.Example().SerializeToString())


def test_boxes_and_faithfulness_curves_round_trip():
    curves = {"deletion": (3.0, 1.5, 0.25), "insertion": (0.0, 2.0, 3.0)}
    record = dataclasses.replace(
        make_record(),
        boxes=((0.1, 0.2, 0.5, 0.75), (0.0, 0.0, 1.0, 1.0)),
        faithfulness={"vanilla": curves},
    )
    out = records.parse(records.encode(record))
    np.testing.assert_allclose(out.boxes, record.boxes, rtol=1e-7)  # float32 in the record
    assert set(out.faithfulness) == {"vanilla"}  # guided had none
    for name, values in curves.items():
        np.testing.assert_allclose(out.faithfulness["vanilla"][name], values)
    parsed = tf.io.parse_single_example(records.encode(record), records.features_for(["vanilla"]))
    np.testing.assert_allclose(parsed["image/object/bbox/xmax"].numpy(), [0.75, 1.0])
    np.testing.assert_allclose(parsed["faithfulness/vanilla/insertion"].numpy(), [0, 2, 3])
    plain = records.parse(records.encode(make_record()))
    assert plain.boxes == () and plain.faithfulness == {}


def test_read_names_a_file_that_is_not_a_record_shard(tmp_path):
    (tmp_path / "records").mkdir()
    (tmp_path / "audit_rows").mkdir()
    with tf.io.TFRecordWriter(str(tmp_path / "records/saliency-a-00000-of-00001.tfrecord")) as w:
        w.write(records.encode(make_record()))
    rows = tmp_path / "audit_rows/rows-a-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(rows)) as w:
        w.write(b'{"key": "cats/001.jpg", "rows": []}')  # a row line: JSON, not an Example
    with pytest.raises(
        ValueError, match=r"rows-a-00000-of-00001.tfrecord is not a saliency record shard"
    ) as err:
        list(records.read(str(tmp_path / "*/*.tfrecord")))
    assert "<output_dir>/records/saliency-*.tfrecord" in str(err.value)  # the fix
    assert [r.key for r in records.read(str(tmp_path / "records/*.tfrecord"))] == ["cats/001.jpg"]
