"""store/gradient_codec.py: compact gradients are lossless, in numpy and in-graph, smaller
than TensorProto bytes, and records of either encoding (or none: older) read the same."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import tensorflow as tf

from pipeline.config import OutputConfig
from pipeline.store import gradient_codec, records
from tests.test_records import make_record


def awkward_gradient(h: int = 9, w: int = 7, c: int = 3) -> np.ndarray:
    """Smooth values at the scale of real gradients plus every float16 edge case."""
    rng = np.random.default_rng(3)
    g = (rng.normal(size=(h, w, c)) * 1e-3).astype(np.float16)
    specials = [0.0, -0.0, np.inf, -np.inf, np.nan, 6e-8, -6e-8, 65504.0, -65504.0, 1e-5]
    g.reshape(-1)[: len(specials)] = np.array(specials, np.float16)
    g[4, :, 1] = 0  # a run of exact zeros, as guided backprop leaves
    return g


@pytest.mark.parametrize("encoding", gradient_codec.ENCODINGS)
def test_both_encodings_are_bitwise_lossless(encoding):
    g = awkward_gradient()
    data = gradient_codec.encode(g, encoding)
    out = gradient_codec.decode(data, encoding, height=9, width=7)
    assert out.dtype == np.float16 and out.shape == (9, 7, 3)
    assert out.tobytes() == g.tobytes()  # NaN payloads and -0 included
    one = gradient_codec.decode(gradient_codec.encode(g[..., :1], encoding), encoding,
                                height=9, width=7)  # fmt: skip
    assert one.shape == (9, 7, 1) and one.tobytes() == g[..., :1].tobytes()


def test_compact_is_the_byte_planes_zlib_compressed_and_smaller():
    rng = np.random.default_rng(0)
    # A smooth map (as real gradients are, at the scale they have): planes compress.
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    g = (np.stack([np.sin(6 * yy) * np.cos(5 * xx)] * 3, -1) * 1e-3).astype(np.float16)
    g += (rng.normal(size=g.shape) * 1e-5).astype(np.float16)
    compact = gradient_codec.encode(g, "compact")
    raw = g.astype("<f2").tobytes()
    n = int.from_bytes(compact[:4], "little")
    assert n == g.size and compact[4 : 4 + n] == raw[0::2]  # the low bytes as they are
    assert zlib.decompress(compact[4 + n :]) == raw[1::2]  # the high bytes compressed
    assert len(compact) < 0.9 * len(gradient_codec.encode(g, "tensor"))


def test_tf_decode_in_a_tf_data_pipeline_equals_numpy():
    g = awkward_gradient()
    blobs = [gradient_codec.encode(g, e) for e in ("compact", "tensor")]
    ds = tf.data.Dataset.from_tensor_slices((blobs, [b"compact", b"tensor"]))
    ds = ds.map(lambda b, e: gradient_codec.tf_decode(b, e, tf.constant(9, tf.int64),
                                                      tf.constant(7, tf.int64)))  # fmt: skip
    for out in ds:
        assert out.dtype == tf.float16 and out.numpy().tobytes() == g.tobytes()


def test_records_store_compact_by_default_and_read_every_encoding():
    record = make_record()
    compact, tensor = records.encode(record), records.encode(record, gradient_encoding="tensor")
    older = tf.train.Example.FromString(tensor)
    del older.features.feature[records.ENCODING_KEY]  # written before the key existed
    for data in (compact, tensor, older.SerializeToString()):
        out = records.parse(data)
        for method, g in record.gradients.items():
            assert out.gradients[method].tobytes() == g.tobytes()
    feature = tf.train.Example.FromString(compact).features.feature
    assert feature[records.ENCODING_KEY].bytes_list.value == [b"compact"]


def test_bad_encoding_and_corrupt_blob_are_named():
    with pytest.raises(ValueError, match=r"gradient_encoding': got 'zstd'.*compact, tensor"):
        OutputConfig(gradient_encoding="zstd")
    with pytest.raises(ValueError, match=r"encoding is 'png': use one of compact, tensor"):
        records.encode(make_record(), gradient_encoding="png")
    with pytest.raises(ValueError, match=r"does not hold \[5, 5, C\]"):
        gradient_codec.decode(gradient_codec.encode(awkward_gradient(), "compact"), "compact",
                              height=5, width=5)  # fmt: skip
    with pytest.raises(ValueError, match="is corrupt"):
        gradient_codec.decode(b"\x01", "compact", height=9, width=7)
