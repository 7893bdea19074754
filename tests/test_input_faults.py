"""Damaged and duplicated inputs: each unreadable TFRecord record (or the unreadable rest of a
shard) is a failure row naming the shard and byte offset while the rest of the job runs;
duplicate keys follow one rule (store.duplicates), the same on every rerun."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os

import pytest
import tensorflow as tf

from pipeline.beam.run import run
from pipeline.config.files import load_config
from pipeline.elements import EncodedImage
from pipeline.store import duplicates as dup
from pipeline.store import tfrecord_scan as scan
from pipeline.store.files import read_jsonl
from pipeline.testing.reliability import base_overrides, check_complete, noise_png

PAYLOADS = [b"alpha", b"bravo" * 10, b"charlie"]
OFFSETS = [0, 21, 87]  # 16 bytes of framing per record: 0, 0+16+5, 21+16+50


def _write(path, payloads) -> bytes:
    """A TFRecord file written by TensorFlow itself (not by the code under test)."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for payload in payloads:
            writer.write(payload)
    return path.read_bytes()


def _scanned(path) -> list[tuple[int, object]]:
    return [
        (offset, (item.reason.split(":")[0], item.resumed) if isinstance(item, scan.Corrupt)
         else item)
        for offset, item in scan.scan_file(str(path))
    ]  # fmt: skip


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def test_scan_reads_good_files_as_tensorflow_does(tmp_path):
    path = tmp_path / "good.tfrecord"
    _write(path, PAYLOADS)
    assert _scanned(path) == list(zip(OFFSETS, PAYLOADS))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == PAYLOADS


def test_scan_resumes_after_a_bad_data_checksum(tmp_path):
    data = _write(tmp_path / "a.tfrecord", PAYLOADS)
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(_flip(data, OFFSETS[1] + 12 + 3))  # a byte of "bravo..."
    assert _scanned(bad) == [
        (0, b"alpha"),
        (21, ("data checksum mismatch", True)),
        (87, b"charlie"),
    ]


@pytest.mark.parametrize(
    ("cut", "reason"),
    [
        (OFFSETS[2] + 12 + 3, "file ends inside a record (3 of 11 bytes)"),
        (OFFSETS[2] + 5, "file ends inside a record header (5 of 12 bytes)"),
    ],
)
def test_scan_reports_a_truncated_file_at_the_offset_it_ends(tmp_path, cut, reason):
    data = _write(tmp_path / "a.tfrecord", PAYLOADS)
    cut_file = tmp_path / "cut.tfrecord"
    cut_file.write_bytes(data[:cut])
    items = list(scan.scan_file(str(cut_file)))
    assert [o for o, _ in items] == OFFSETS
    assert items[:2] == list(zip(OFFSETS[:2], PAYLOADS[:2]))
    assert items[2][1] == scan.Corrupt(OFFSETS[2], reason, False)


def test_scan_stops_at_a_bad_length_checksum(tmp_path):
    data = _write(tmp_path / "a.tfrecord", PAYLOADS)
    bad = tmp_path / "len.tfrecord"
    bad.write_bytes(_flip(data, OFFSETS[1] + 2))  # a byte of the length
    assert _scanned(bad) == [(0, b"alpha"), (21, ("length checksum mismatch", False))]


def test_scan_of_a_cut_gzip_shard_and_of_a_missing_file(tmp_path):
    data = _write(tmp_path / "a.tfrecord", PAYLOADS * 40)
    packed = gzip.compress(data)
    cut = tmp_path / "cut.tfrecord.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    items = list(scan.scan_file(str(cut)))
    good = [item for _, item in items if isinstance(item, bytes)]
    assert 0 < len(good) < len(PAYLOADS) * 40
    assert good == (PAYLOADS * 40)[: len(good)]  # in order, none lost before the cut
    last_offset, last = items[-1]
    assert isinstance(last, scan.Corrupt) and not last.resumed
    assert last_offset == sum(len(p) + 16 for p in good)
    missing = list(scan.scan_file(str(tmp_path / "gone.tfrecord")))
    assert len(missing) == 1 and missing[0][0] == 0 and "cannot open" in missing[0][1].reason


def _image(data: bytes, source: str, label: int = 0) -> EncodedImage:
    return EncodedImage(key="k", source=source, data=data, label=label)


def _variant(data: bytes, label: int) -> str:
    text = f"{hashlib.sha256(data).hexdigest()}\0{label}\0()"
    return hashlib.sha256(text.encode()).hexdigest()


def test_duplicate_rule():
    x, y = _image(b"x", "s1"), _image(b"y", "s2")
    # one input under a key: unchanged
    assert dup.resolve("k", [x]) == ([x], [])
    # two different inputs: each keyed by its own variant, in any order
    want = sorted(f"k.dup-{_variant(d, 0)[:12]}" for d in (b"x", b"y"))
    for order in itertools.permutations([x, y]):
        kept, copies = dup.resolve("k", order)
        assert sorted(im.key for im in kept) == want and copies == []
    # the same image with another label is another variant
    kept, _ = dup.resolve("k", [x, _image(b"x", "s3", label=1)])
    assert sorted(im.key for im in kept) == sorted(
        f"k.dup-{_variant(b'x', label)[:12]}" for label in (0, 1)
    )
    # exact copies: read once (the first source), the others are failure rows
    copies_in = [_image(b"x", "s9"), _image(b"x", "s1"), _image(b"x", "s5")]
    for order in itertools.permutations(copies_in):
        kept, copies = dup.resolve("k", order)
        assert [(im.key, im.source) for im in kept] == [("k", "s1")]
        assert [(f.key, f.source, f.stage) for f in copies] == [
            ("k.copy-2", "s5", "read"),
            ("k.copy-3", "s9", "read"),
        ]
        assert "same image, label and boxes as key 'k'" in copies[0].error


def _example(key: str, image: bytes, label: int) -> bytes:
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "image/key": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key.encode()])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _offsets(payloads: list[bytes]) -> list[int]:
    return list(itertools.accumulate((len(p) + 16 for p in payloads[:-1]), initial=0))


@pytest.mark.slow
def test_run_over_corrupt_shards_and_duplicate_keys(tmp_path, tiny_model):
    """Among good shards: one with a bad data checksum, one cut short, and duplicate keys.
    The run goes on, every damaged record is a failure row (shard, offset), the rest is
    explained, inputs reconcile; an incremental rerun keeps every key."""
    model = tiny_model
    data = tmp_path / "data"
    data.mkdir()
    img = {name: noise_png(i) for i, name in enumerate(["a0", "a1", "a2", "b0", "b1", "b2",
                                                          "c0", "c1", "c2", "x", "y"])}  # fmt: skip
    _write(data / "a.tfrecord", [_example(k, img[k], 1) for k in ("a0", "a1", "a2")])
    b = [_example(k, img[k], 2) for k in ("b0", "b1", "b2")]
    raw_b = _write(tmp_path / "b.tmp", b)
    (data / "b.tfrecord").write_bytes(_flip(raw_b, _offsets(b)[1] + 12 + 40))
    c = [_example(k, img[k], 0) for k in ("c0", "c1", "c2")]
    raw_c = _write(tmp_path / "c.tmp", c)
    (data / "c.tfrecord").write_bytes(raw_c[: _offsets(c)[2] + 30])
    # "dup" twice with different images; "a0" again, the very same example
    d = [_example("dup", img["x"], 0), _example("dup", img["y"], 0), _example("a0", img["a0"], 1)]
    _write(data / "d.tfrecord", d)

    out = str(tmp_path / "out")
    overrides = [
        *base_overrides(model, f"{data}/*.tfrecord", out),
        "source.kind=tfrecord",
        "source.key_key=image/key",
        "run.max_failure_fraction=0.5",
    ]
    summary = run(load_config(None, overrides))
    dup_keys = sorted(f"dup.dup-{_variant(img[k], 0)[:12]}" for k in "xy")
    want_keys = sorted(["a0", "a1", "a2", "b0", "b2", "c0", "c1", *dup_keys])
    got = check_complete(out)
    assert sorted(r.key for r in got["records"]) == want_keys
    failures = {f["key"]: f for f in got["failures"]}
    b_at, c_at = f"{data}/b.tfrecord@{_offsets(b)[1]}", f"{data}/c.tfrecord@{_offsets(c)[2]}"
    assert sorted(failures) == sorted([b_at, c_at, "a0.copy-2"])
    assert all(f["stage"] == "read" for f in failures.values())
    assert failures[b_at]["source"] == f"{data}/b.tfrecord"
    assert "data checksum mismatch" in failures[b_at]["error"]
    assert f"byte {_offsets(c)[2]}" in failures[c_at]["error"]
    assert "file ends inside a record" in failures[c_at]["error"]
    assert (summary.inputs, summary.images_written, summary.images_failed) == (12, 9, 3)
    assert summary.reconciled
    labels = {r.key: r.label for r in got["records"]}
    assert labels["a0"] == 1 and labels["b2"] == 2

    again = run(load_config(None, [*overrides, "run.incremental=true"]))
    assert (again.images_skipped, again.images_written, again.images_failed) == (9, 0, 3)
    assert sorted(r.key for r in check_complete(out)["records"]) == want_keys
    assert sorted(f["key"] for f in read_jsonl(os.path.join(out, "failures.jsonl"))) == sorted(
        failures
    )
