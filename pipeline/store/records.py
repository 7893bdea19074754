"""The TFRecord schema: one ``tf.train.Example`` per (image, target) record.

The keys are a public contract, stated once in docs/outputs.md ("TFRecord schema": every
key, its type and meaning, the compact gradient's byte layout, the views' formulas);
tests/test_schema_reader.py reads records from that page alone and equals :func:`read`.

Gradients are stored by ``store.gradient_codec``: ``compact`` by default, which a ``tf.data``
pipeline decodes in-graph with ``gradient_codec.tf_decode``; ``output.gradient_encoding:
tensor`` writes ``TensorProto`` bytes that ``tf.io.parse_tensor`` reads. Encoding is
deterministic: the Example is serialised with sorted map keys, so a rerun gives identical
bytes.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Iterable, Iterator

import numpy as np
import tensorflow as tf
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil  # the format Beam's sink writes
from PIL import Image

from pipeline.choices import BOX_FEATURES, DEFAULT_PERCENTILE, RECORD_VIEWS
from pipeline.elements import SaliencyRecord, record_id
from pipeline.maps import render
from pipeline.maps import views as maps
from pipeline.store import gradient_codec, manifest
from pipeline.store.gradient_codec import deserialize_array, serialize_array  # noqa: F401
from pipeline.store.metadata import METADATA_PREFIX

FEATURES = {
    "image/key": tf.io.FixedLenFeature([], tf.string),
    "image/source": tf.io.FixedLenFeature([], tf.string),
    "image/sha256": tf.io.FixedLenFeature([], tf.string),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/original_height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/original_width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/encoded": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "prediction/class": tf.io.FixedLenFeature([], tf.int64),
    "prediction/probability": tf.io.FixedLenFeature([], tf.float32),
    "prediction/top_k/classes": tf.io.FixedLenSequenceFeature([], tf.int64, allow_missing=True),
    "prediction/top_k/probabilities": tf.io.FixedLenSequenceFeature(
        [], tf.float32, allow_missing=True
    ),
    "target/class": tf.io.FixedLenFeature([], tf.int64),
    "target/rank": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "target/score": tf.io.FixedLenFeature([], tf.float32),
    "saliency/methods": tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True),
    "run/id": tf.io.FixedLenFeature([], tf.string),
    "model/name": tf.io.FixedLenFeature([], tf.string),
    "model/fingerprint": tf.io.FixedLenFeature([], tf.string),
    "run/recomputed": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "prediction/name": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "target/name": tf.io.FixedLenFeature([], tf.string, default_value=b""),
}
CURVES = ("deletion", "insertion")
PERCENTILE_KEY = "saliency/percentile"  # the views' clipping percentile (views are derived)
FEATURES[PERCENTILE_KEY] = tf.io.FixedLenFeature([], tf.float32, default_value=DEFAULT_PERCENTILE)
ENCODING_KEY = "saliency/gradient_encoding"  # gradient_codec.ENCODINGS; absent: tensor
FEATURES[ENCODING_KEY] = tf.io.FixedLenFeature([], tf.string, default_value=gradient_codec.TENSOR)
for _key in BOX_FEATURES:
    FEATURES[_key] = tf.io.FixedLenSequenceFeature([], tf.float32, allow_missing=True)


@dataclasses.dataclass(frozen=True)
class DecodedRecord:
    """One parsed record, with numpy arrays (see the module docstring for the keys)."""

    key: str
    source: str
    sha256: str
    height: int
    width: int
    original_height: int  # before resizing; 0 when the record does not say
    original_width: int
    label: int
    prediction_class: int
    prediction_probability: float
    top_k_classes: np.ndarray  # int64 [k]
    top_k_probabilities: np.ndarray  # float32 [k]
    target_class: int
    target_rank: int
    target_score: float
    methods: tuple[str, ...]
    gradients: dict[str, np.ndarray]  # method -> float16 [H, W, C]
    maps: dict[str, dict[str, np.ndarray]]  # method -> view -> float32 [H, W]
    image: np.ndarray | None  # uint8 [H, W, C], None when written without the image
    run_id: str
    model_name: str
    model_fingerprint: str
    recomputed: int
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # normalised, original image
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)  # column -> value
    faithfulness: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    prediction_name: str = ""
    target_name: str = ""
    # the job's in-memory view only (record_view): the model's feature map, never stored
    features: np.ndarray | None = None

    @property
    def record_id(self) -> str:
        """Same as SaliencyRecord.record_id: the key, plus the target for further targets."""
        return record_id(self.key, self.target_rank, self.target_class)


_WILDCARDS = re.compile(r"[*?\[]")


def _check_method(method: str) -> str:
    if not isinstance(method, str) or not method or "/" in method:
        raise ValueError(
            f"method name {method!r} cannot be a record key: use a non-empty name "
            "without '/' (e.g. 'vanilla')."
        )
    return method


def method_keys(method: str) -> dict[str, str]:
    """The record keys of one method: {"gradient": ..., "abs": ..., ...} (the views' keys
    are those of records written before they were derived on read)."""
    m = _check_method(method)
    return {part: f"saliency/{m}/{part}" for part in ("gradient", *RECORD_VIEWS)}


def curve_key(method: str, curve: str) -> str:
    """The record key of one method's deletion or insertion curve."""
    return f"faithfulness/{_check_method(method)}/{curve}"


def features_for(methods: Iterable[str]) -> dict:
    """Parse spec for ``tf.io.parse_single_example``: FEATURES plus each method's gradient
    and curves (views are derived: ``maps.compute_views`` of the parsed gradient)."""
    spec = dict(FEATURES)
    for method in methods:
        spec[method_keys(method)["gradient"]] = tf.io.FixedLenFeature([], tf.string)
        for curve in CURVES:
            spec[curve_key(method, curve)] = tf.io.FixedLenSequenceFeature(
                [], tf.float32, allow_missing=True
            )
    return spec


def _bytes(*values: bytes | str) -> tf.train.Feature:
    raw = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=raw))


def _ints(*values: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(*values: float) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def _check_gradient(record: SaliencyRecord, method: str, gradient: np.ndarray) -> np.ndarray:
    g = np.asarray(gradient)
    if g.ndim != 3 or g.shape[:2] != (record.height, record.width):
        raise ValueError(
            f"record {record.key!r}: gradients[{method!r}] has shape {g.shape}, expected "
            f"[{record.height}, {record.width}, C] (the pixels' size)."
        )
    return g.astype(np.float16)


def encode(
    record: SaliencyRecord,
    *,
    include_image: bool = True,
    percentile: float = DEFAULT_PERCENTILE,
    gradient_encoding: str = gradient_codec.COMPACT,
) -> bytes:
    """Serialise one SaliencyRecord as a ``tf.train.Example`` (deterministic bytes)."""
    if not isinstance(record, SaliencyRecord):
        raise TypeError(f"encode() takes a SaliencyRecord, got {type(record).__name__}.")
    if len(record.top_k_classes) != len(record.top_k_probabilities):
        raise ValueError(
            f"record {record.key!r}: top_k_classes has {len(record.top_k_classes)} entries "
            f"but top_k_probabilities has {len(record.top_k_probabilities)}; they must match."
        )
    methods = [_check_method(m) for m in record.gradients]
    feature = {
        "image/key": _bytes(record.key),
        "image/source": _bytes(record.source),
        "image/sha256": _bytes(record.sha256),
        "image/height": _ints(record.height),
        "image/width": _ints(record.width),
        "image/original_height": _ints(record.original_height),
        "image/original_width": _ints(record.original_width),
        "label": _ints(record.label),
        "prediction/class": _ints(record.prediction_class),
        "prediction/probability": _floats(record.prediction_probability),
        "prediction/top_k/classes": _ints(*record.top_k_classes),
        "prediction/top_k/probabilities": _floats(*record.top_k_probabilities),
        "target/class": _ints(record.target_class),
        "target/rank": _ints(record.target_rank),
        "target/score": _floats(record.target_score),
        "saliency/methods": _bytes(*methods),
        "run/id": _bytes(record.run_id),
        "model/name": _bytes(record.model_name),
        "model/fingerprint": _bytes(record.model_fingerprint),
        "run/recomputed": _ints(record.recomputed),
    }
    if record.prediction_name or record.target_name:
        feature["prediction/name"] = _bytes(record.prediction_name)
        feature["target/name"] = _bytes(record.target_name)
    for name, value in record.metadata:
        feature[METADATA_PREFIX + name] = _bytes(value)
    if record.boxes:
        for i, key in enumerate(BOX_FEATURES):
            feature[key] = _floats(*(box[i] for box in record.boxes))
    for method, curves in record.faithfulness.items():
        for curve in CURVES:
            feature[curve_key(method, curve)] = _floats(*curves[curve])
    if include_image:
        feature["image/encoded"] = _bytes(render.encode_png(np.asarray(record.pixels)))
    feature[PERCENTILE_KEY] = _floats(percentile)
    feature[ENCODING_KEY] = _bytes(gradient_codec.check_encoding(gradient_encoding))
    for method in methods:
        g = _check_gradient(record, method, record.gradients[method])
        feature[method_keys(method)["gradient"]] = _bytes(
            gradient_codec.encode(g, gradient_encoding)
        )
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


class _Fields:
    """Typed access to an Example's features, with errors that name the missing key."""

    def __init__(self, example: tf.train.Example) -> None:
        self._f = example.features.feature

    def values(self, key: str, kind: str, required: bool):
        if key not in self._f:
            if required:
                raise ValueError(f"record has no {key!r} feature: not a saliency record.")
            return None
        return list(getattr(self._f[key], kind).value)

    def bytes_list(self, key: str, required: bool = True) -> list[bytes] | None:
        return self.values(key, "bytes_list", required)

    def one(self, key: str, kind: str, default=None):
        values = self.values(key, kind, default is None)
        if values is None:
            return default
        if len(values) != 1:
            raise ValueError(f"record feature {key!r} has {len(values)} values, expected 1.")
        return values[0]

    def text(self, key: str) -> str:
        return self.one(key, "bytes_list").decode("utf-8")

    def metadata(self) -> dict[str, str]:
        return {k[len(METADATA_PREFIX) :]: self.text(k) for k in sorted(self._f)
                if k.startswith(METADATA_PREFIX)}  # fmt: skip


def _decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        arr = np.asarray(img)
    return arr[..., None] if arr.ndim == 2 else arr


def parse(serialized: bytes) -> DecodedRecord:
    """Parse one serialised record (as written by :func:`encode`) into numpy arrays."""
    try:
        example = tf.train.Example.FromString(bytes(serialized))
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, not a declared dependency
        raise ValueError(f"not a tf.train.Example ({type(exc).__name__}: {exc})") from exc
    f = _Fields(example)
    methods = tuple(m.decode("utf-8") for m in f.bytes_list("saliency/methods"))
    gradients: dict[str, np.ndarray] = {}
    views: dict[str, dict[str, np.ndarray]] = {}
    percentile = float(f.one(PERCENTILE_KEY, "float_list", default=DEFAULT_PERCENTILE))
    encoding = f.one(ENCODING_KEY, "bytes_list", default=b"tensor").decode("utf-8")
    size = {"height": int(f.one("image/height", "int64_list")),
            "width": int(f.one("image/width", "int64_list"))}  # fmt: skip
    for method in methods:
        keys = method_keys(method)
        raw = f.one(keys["gradient"], "bytes_list")
        gradients[method] = gradient_codec.decode(raw, encoding, **size)
        stored = {view: deserialize_array(f.one(keys[view], "bytes_list"))
                  for view in RECORD_VIEWS
                  if f.bytes_list(keys[view], required=False) is not None}  # fmt: skip
        views[method] = stored or maps.compute_views(
            gradients[method], percentile=percentile, views=RECORD_VIEWS
        )
    encoded = f.one("image/encoded", "bytes_list", default=b"")
    return DecodedRecord(
        key=f.text("image/key"),
        source=f.text("image/source"),
        sha256=f.text("image/sha256"),
        **size,
        original_height=int(f.one("image/original_height", "int64_list", default=0)),
        original_width=int(f.one("image/original_width", "int64_list", default=0)),
        label=int(f.one("label", "int64_list", default=-1)),
        prediction_class=int(f.one("prediction/class", "int64_list")),
        prediction_probability=float(f.one("prediction/probability", "float_list")),
        top_k_classes=np.array(f.values("prediction/top_k/classes", "int64_list", True), np.int64),
        top_k_probabilities=np.array(
            f.values("prediction/top_k/probabilities", "float_list", True), np.float32
        ),
        target_class=int(f.one("target/class", "int64_list")),
        target_rank=int(f.one("target/rank", "int64_list", default=0)),
        target_score=float(f.one("target/score", "float_list")),
        methods=methods,
        gradients=gradients,
        maps=views,
        image=_decode_png(encoded) if encoded else None,
        run_id=f.text("run/id"),
        model_name=f.text("model/name"),
        model_fingerprint=f.text("model/fingerprint"),
        recomputed=int(f.one("run/recomputed", "int64_list", default=0)),
        boxes=_boxes(f),
        metadata=f.metadata(),
        prediction_name=f.one("prediction/name", "bytes_list", default=b"").decode("utf-8"),
        target_name=f.one("target/name", "bytes_list", default=b"").decode("utf-8"),
        faithfulness={
            m: {
                c: np.array(f.values(curve_key(m, c), "float_list", True), np.float64)
                for c in CURVES
            }  # fmt: skip
            for m in methods
            if f.values(curve_key(m, "deletion"), "float_list", False) is not None
        },
    )


def _boxes(f: _Fields) -> tuple[tuple[float, float, float, float], ...]:
    sides = [f.values(key, "float_list", False) or [] for key in BOX_FEATURES]
    if len({len(s) for s in sides}) != 1:
        raise ValueError(f"record features {list(BOX_FEATURES)} differ in length: {sides}.")
    return tuple(tuple(float(v) for v in box) for box in zip(*sides))


def read(source: str) -> Iterator[DecodedRecord]:
    """Iterate over the records of an output directory, or of the files matching a
    pattern (sorted), on any Beam filesystem (local, gs://, s3://: TensorFlow's own has no
    s3:// since 2.6).

    An output directory (one with a manifest.jsonl) gives exactly its committed records:
    only the shard sets the manifest names, whatever else records/ holds for a moment (a
    publish cut short). A pattern reads every matching file as it is.

    Raises FileNotFoundError at once when nothing matches.
    """
    if not _WILDCARDS.search(source) and manifest.has_manifest(source):
        return _iterate(manifest.committed_shards(source))
    try:
        matched = FileSystems.match([source])[0].metadata_list
    except BeamIOError:
        matched = []
    files = sorted(m.path for m in matched)
    if not files:
        raise FileNotFoundError(
            f"no TFRecord files match {source!r}: give an output directory (its committed "
            "records) or a pattern such as <output_dir>/records/saliency-*.tfrecord."
        )
    return _iterate(files)


def _iterate(files: list[str]) -> Iterator[DecodedRecord]:
    for path in files:
        for raw in read_raw(path):
            try:
                yield parse(raw)
            except ValueError as exc:
                raise ValueError(
                    f"{path} is not a saliency record shard ({exc}): an output dir's records "
                    "are records/saliency-*.tfrecord (audit_rows/ holds the audit's row lines, "
                    "JSON). Read the output dir itself, or a pattern such as "
                    "<output_dir>/records/saliency-*.tfrecord."
                ) from exc


def read_raw(path: str) -> Iterator[bytes]:
    """The serialized records of one TFRecord file, in order, on any Beam filesystem (each
    record's CRCs checked)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        while (raw := _TFRecordUtil.read_record(handle)) is not None:
            yield raw
