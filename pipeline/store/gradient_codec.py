"""How a record's float16 gradient is stored: as TensorProto bytes (``tensor``, what
``tf.io.parse_tensor`` reads) or byte-shuffled and zlib-compressed (``compact``, the default).

``compact`` is lossless: the two bytes of each float16 are split into two planes. The high
plane (sign, exponent, two mantissa bits) varies little from pixel to pixel and is
zlib-compressed; the low plane (mantissa bits) is noise, compresses to 1.00 of its size and
is stored as is, which halves the writer's zlib time. Layout: the low plane's length N
(uint32, little-endian), the N low bytes, then zlib(high bytes). On MobileNetV2's maps at
224 a gradient takes ~0.88 of its raw bytes, where plain zlib gives ~0.93
(benchmarks/record_bytes.py). A ``tf.data`` pipeline decodes it in-graph with
:func:`tf_decode` (no Python).
"""

from __future__ import annotations

import zlib

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from pipeline.choices import GRADIENT_ENCODINGS

ENCODINGS = GRADIENT_ENCODINGS
COMPACT, TENSOR = ENCODINGS
# zlib level 1: within 1% of level 6's size here, and the cheapest to write on workers.
_LEVEL = 1
_DTYPES = {np.dtype(np.float16): types_pb2.DT_HALF, np.dtype(np.float32): types_pb2.DT_FLOAT}


def serialize_array(array: np.ndarray) -> bytes:
    """TensorProto bytes of a float16/float32 array, byte-identical to tf.io.serialize_tensor."""
    arr = np.asarray(array)
    dtype = _DTYPES.get(arr.dtype.newbyteorder("="))
    if dtype is None:
        raise TypeError(f"array dtype {arr.dtype} is not serialisable here: use float16/32.")
    # TensorProto.tensor_content is little-endian whatever the host.
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(s)) for s in arr.shape]
    )
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, tensor_content=arr.tobytes())
    return proto.SerializeToString()


def deserialize_array(data: bytes) -> np.ndarray:
    """Inverse of :func:`serialize_array` (also reads tf.io.serialize_tensor bytes)."""
    return tf.make_ndarray(tensor_pb2.TensorProto.FromString(data))


def check_encoding(encoding: str, *, field: str = "encoding") -> str:
    """``encoding`` when it is one of ENCODINGS, else a ValueError naming the choices."""
    if encoding not in ENCODINGS:
        raise ValueError(
            f"{field} is {encoding!r}: use one of {', '.join(ENCODINGS)} (compact: lossless, "
            "~0.87x the bytes; tensor: what tf.io.parse_tensor reads)."
        )
    return encoding


def encode(gradient: np.ndarray, encoding: str) -> bytes:
    """The stored bytes of one float16 gradient [H, W, C]."""
    g = np.ascontiguousarray(gradient, dtype="<f2")
    if check_encoding(encoding) == TENSOR:
        return serialize_array(g)
    pairs = g.reshape(-1).view(np.uint8).reshape(-1, 2)  # [N, 2]: low byte, high byte
    low, high = np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])
    header = np.array([low.size], "<u4").tobytes()
    return header + low.tobytes() + zlib.compress(high.tobytes(), _LEVEL)


def decode(data: bytes, encoding: str, *, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`encode`: float16 [height, width, C]."""
    if check_encoding(encoding) == TENSOR:
        return deserialize_array(data)
    n = int(np.frombuffer(data[:4], "<u4")[0]) if len(data) >= 4 else -1
    high = np.frombuffer(zlib.decompress(data[4 + n :]), np.uint8) if n >= 0 else None
    if high is None or n % (height * width) or n == 0 or high.size != n:
        raise ValueError(
            f"compact gradient of {len(data)} bytes does not hold [{height}, {width}, C] "
            "float16: the record is corrupt or its image/height, image/width are wrong."
        )
    pairs = np.empty((n, 2), np.uint8)
    pairs[:, 0] = np.frombuffer(data, np.uint8, count=n, offset=4)
    pairs[:, 1] = high
    return pairs.view("<f2").reshape(height, width, -1).astype(np.float16)


def tf_decode(data: tf.Tensor, encoding: tf.Tensor, height: tf.Tensor, width: tf.Tensor):
    """In-graph :func:`decode` for ``tf.data``: scalar string tensors ``data`` and
    ``encoding`` (the record's ``saliency/gradient_encoding``) and the record's height and
    width; a float16 [H, W, C] tensor."""

    def compact() -> tf.Tensor:
        n = tf.io.decode_raw(tf.strings.substr(data, 0, 4), tf.int32, little_endian=True)[0]
        low = tf.io.decode_raw(tf.strings.substr(data, 4, n), tf.uint8)
        rest = tf.strings.substr(data, 4 + n, tf.strings.length(data) - 4 - n)
        high = tf.io.decode_raw(tf.io.decode_compressed(rest, "ZLIB"), tf.uint8)
        pairs = tf.stack([low, high], axis=1)  # [N, 2]: little-endian float16
        return tf.reshape(tf.bitcast(pairs, tf.float16), tf.stack([height, width, -1]))

    def tensor() -> tf.Tensor:
        return tf.reshape(tf.io.parse_tensor(data, tf.float16), tf.stack([height, width, -1]))

    return tf.cond(tf.equal(encoding, COMPACT), compact, tensor)
