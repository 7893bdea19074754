"""Image input as Beam transforms: ReadImages, DecodeImages, SkipDone.

``ReadImages`` turns files, TFRecords of ``tf.train.Example`` or a prepared TFDS dataset
into :class:`EncodedImage` records; ``DecodeImages`` turns those into fixed-size uint8
:class:`ImageItem` records. Both return a NamedTuple of two PCollections, the records and
the :class:`Failure` records of inputs that could not be read or decoded: nothing is
dropped silently (inputs = items + failures). ``SkipDone`` drops the inputs an incremental
run already did, before any decode.

The work is done by pure functions elsewhere: :mod:`pipeline.listing` (which files a
pattern names, their keys) and :mod:`pipeline.decode` (bytes -> pixels at the model size).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import TaggedOutput

from pipeline.config import SOURCE_KINDS
from pipeline.decode import (
    check_decode_options,
    content_sha256,
    sha256_hex,
    short_error,
    to_image_item,
)
from pipeline.elements import EncodedImage, Failure
from pipeline.listing import (
    IMAGE_EXTENSIONS,
    check_files_exist,
    check_pattern_matches,
    common_root,
    list_pattern,
    normalise_pattern,
    printable,
    relative_key,
    split_patterns,
)

__all__ = [
    "FAILURES",
    "SKIPPED",
    "DecodeImages",
    "Decoded",
    "Read",
    "ReadImages",
    "SkipDone",
    "Skipped",
    "done_token",
    "read_done_index",
    "write_done_index",
]

FAILURES = "failures"  # the tag of the failure output of every DoFn here


# ---------------------------------------------------------------------------- Beam DoFns


# process() methods carry no return annotation on purpose: Beam turns it into an output
# type hint, and a Union with TaggedOutput confuses its checks.


class _ListFilesFn(beam.DoFn):
    """pattern -> (path, key) for every image file it matches; keys relative to ``root``
    (the patterns' common root) and made printable."""

    def __init__(self, extensions: tuple[str, ...] | None, root: str):
        self._extensions = extensions
        self._root = root

    def process(self, pattern: str):
        for path, _ in list_pattern(pattern, extensions=self._extensions):
            yield _wire_path(path), printable(relative_key(path, self._root))


def _wire_path(path: str) -> str | bytes:
    """A path Beam's coders can carry: a local name that is not UTF-8 travels as bytes."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


class _ReadFileFn(beam.DoFn):
    """(path, key) -> EncodedImage; unreadable files -> Failure at stage "read"."""

    def __init__(self) -> None:
        self._failed = beam.metrics.Metrics.counter("sources", "read_failures")

    def process(self, element: tuple[str | bytes, str]):
        wire, key = element
        path = os.fsdecode(wire) if isinstance(wire, bytes) else wire
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read()
        except Exception as e:  # dangling symlink, loop, permission, vanished file, ...
            self._failed.inc()
            failure = Failure(key, printable(path), "read", printable(short_error(e)))
            yield TaggedOutput(FAILURES, failure)
            return
        yield EncodedImage(key=key, source=printable(path), data=data)


def _feature_values(example, name: str) -> list:
    feature = example.features.feature.get(name) if name else None
    if feature is None:
        return []
    kind = feature.WhichOneof("kind")
    return list(getattr(feature, kind).value) if kind else []


class _ParseExampleFn(beam.DoFn):
    """(file, serialized tf.train.Example) -> EncodedImage; bad records -> Failure "read"."""

    def __init__(self, *, image_key: str, label_key: str, key_key: str):
        self._image_key = image_key
        self._label_key = label_key
        self._key_key = key_key
        self._failed = beam.metrics.Metrics.counter("sources", "read_failures")

    def process(self, element: tuple[str, bytes]):
        import tensorflow as tf

        filename, record = element
        key = sha256_hex(record)  # for records too broken to name
        try:
            example = tf.train.Example.FromString(record)
            key = self._given_key(example) or key
            yield self._to_image(example, filename)
        except Exception as e:
            self._failed.inc()
            yield TaggedOutput(FAILURES, Failure(key, filename, "read", short_error(e)))

    def _given_key(self, example) -> str:
        values = _feature_values(example, self._key_key)
        if not values:
            return ""
        value = values[0]
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    def _to_image(self, example, filename: str) -> EncodedImage:
        images = _feature_values(example, self._image_key)
        if not images or not isinstance(images[0], bytes):
            present = sorted(example.features.feature.keys())
            raise ValueError(
                f"record has no bytes feature {self._image_key!r} (features: {present}); "
                "set image_key to the feature holding the encoded image"
            )
        labels = _feature_values(example, self._label_key)
        if labels and not isinstance(labels[0], int):
            raise ValueError(
                f"label feature {self._label_key!r} holds {type(labels[0]).__name__}, not "
                "int64: set label_key to an int64 feature, or to '' for no labels"
            )
        # key_key when the record has it, else the image's sha256: stable, unique per content
        key = self._given_key(example) or sha256_hex(images[0])
        return EncodedImage(
            key=key, source=filename, data=images[0], label=int(labels[0]) if labels else -1
        )


def _to_numpy(value) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _scalar_text(value) -> str:
    """A scalar string tensor / array / bytes as str."""
    value = _to_numpy(value)
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class _TfdsExampleFn(beam.DoFn):
    """TFDS example dict -> EncodedImage with decoded pixels; bad ones -> Failure "read"."""

    def __init__(
        self,
        *,
        name: str,
        split: str,
        offsets: dict[str, tuple[str, int]],
        image_feature: str,
        label_feature: str,
    ):
        self._name = name
        self._split = split
        self._offsets = offsets
        self._image_feature = image_feature
        self._label_feature = label_feature
        self._failed = beam.metrics.Metrics.counter("sources", "read_failures")

    def _key(self, tfds_id: str, pixels: np.ndarray) -> str:
        """name/split/index within the split (as tfds.load orders it), from the tfds_id
        "<shard file>__<index in shard>"; a content hash when the id is unknown."""
        shard, _, index = tfds_id.rpartition("__")
        place = self._offsets.get(shard.rsplit("/", 1)[-1])
        if place is not None and index.isdigit():
            return f"{self._name}/{place[0]}/{place[1] + int(index)}"
        return f"{self._name}/{self._split}/{sha256_hex(np.ascontiguousarray(pixels).tobytes())}"

    def process(self, example: dict):
        tfds_id = ""
        try:
            if "tfds_id" in example:
                tfds_id = _scalar_text(example["tfds_id"])
            pixels = _to_numpy(example[self._image_feature])
            label = -1
            if self._label_feature and self._label_feature in example:
                label = int(_to_numpy(example[self._label_feature]))
            key = self._key(tfds_id, pixels)
        except Exception as e:
            self._failed.inc()
            key = f"{self._name}/{self._split}/{tfds_id or 'unknown'}"
            failure = Failure(key, f"tfds:{self._name}:{tfds_id}", "read", short_error(e))
            yield TaggedOutput(FAILURES, failure)
            return
        yield EncodedImage(
            key=key, source=f"tfds:{self._name}:{tfds_id}", pixels=pixels, label=label
        )


class _DecodeFn(beam.DoFn):
    """EncodedImage -> ImageItem; any error -> Failure at stage "decode"."""

    def __init__(
        self, *, input_size: tuple[int, int], channels: int, resize_policy: str, max_pixels: int
    ):
        self._kwargs = {
            "input_size": tuple(input_size),
            "channels": channels,
            "resize_policy": resize_policy,
            "max_pixels": max_pixels,
        }
        self._decoded = beam.metrics.Metrics.counter("sources", "decoded")
        self._failed = beam.metrics.Metrics.counter("sources", "decode_failures")

    def process(self, element: EncodedImage):
        try:
            item = to_image_item(element, **self._kwargs)
        except Exception as e:
            self._failed.inc()
            key = str(getattr(element, "key", "?"))
            source = str(getattr(element, "source", "?"))
            yield TaggedOutput(FAILURES, Failure(key, source, "decode", short_error(e)))
            return
        self._decoded.inc()
        yield item


def _image_sort_key(image: EncodedImage) -> tuple[str, str]:
    return image.key, image.source


def _listing_sort_key(path_key: tuple[str | bytes, str]) -> tuple[str, str]:
    path = path_key[0]
    return path_key[1], printable(os.fsdecode(path) if isinstance(path, bytes) else path)


def _explode(values: list) -> list:
    return values


def _smallest(pcoll, limit: int, sort_key, label: str):
    """The ``limit`` elements with the smallest sort keys (deterministic smoke subsets)."""
    return (
        pcoll
        | f"{label}Smallest" >> beam.combiners.Top.Of(limit, key=sort_key, reverse=True)
        | f"{label}Explode" >> beam.FlatMap(_explode)
    )


# ---------------------------------------------------------------------------- PTransforms


class Read(NamedTuple):
    """ReadImages' result: the images, and inputs that could not be read (stage "read")."""

    images: beam.PCollection  # of EncodedImage
    failures: beam.PCollection  # of Failure


class Decoded(NamedTuple):
    """DecodeImages' result: model-ready items, and inputs that failed (stage "decode")."""

    items: beam.PCollection  # of ImageItem
    failures: beam.PCollection  # of Failure


class ReadImages(beam.PTransform):
    """PBegin -> :class:`Read` (images: PCollection[EncodedImage], failures).

    kind="files": ``pattern`` is one or more comma-separated globs on any Beam filesystem
    (local, gs://, s3://); ``*`` stays within a directory, ``**`` recurses (``a/**/*.jpg``
    includes ``a/x.jpg``), a trailing ``/`` means everything below. Only files with an
    image extension (``extensions``, case-insensitive; None: all) are read; a file matched by
    several patterns is read once. key = path relative to the patterns' common root
    (:func:`common_root`; for one pattern its fixed root, as :func:`key_for`), so two files
    never share a key; names that are not UTF-8 keep their bytes as ``\\xNN``
    (:func:`printable`); label -1. A pattern matching nothing fails at construction.
    Unreadable files (dangling symlinks, symlink loops, permissions) become failures.

    kind="tfrecord": ``pattern`` globs TFRecord files of tf.train.Example: the image bytes
    from ``image_key``, the int64 label from ``label_key`` (-1 when absent; "" for none),
    key from ``key_key`` when given and present, else the sha256 of the image bytes;
    source = the shard file. Records without the image -> failures.

    kind="tfds": a prepared TFDS dataset (nothing is downloaded) read with
    tfds.beam.ReadFromTFDS; pixels decoded by TFDS (data=None); key
    "<dataset>/<split>/<index within the split>" from the example's tfds_id.

    ``limit``: keep only the N inputs with the smallest keys (a deterministic smoke subset;
    for files it is applied to the listing, before reading; otherwise to read images).
    """

    def __init__(
        self,
        *,
        kind: str,
        pattern: str = "",
        image_key: str = "image/encoded",
        label_key: str = "image/class/label",
        key_key: str = "",
        tfds_name: str = "",
        tfds_split: str = "train",
        tfds_data_dir: str | None = None,
        tfds_image_feature: str = "image",
        tfds_label_feature: str = "label",
        limit: int | None = None,
        extensions: tuple[str, ...] | None = IMAGE_EXTENSIONS,
    ):
        super().__init__()
        if kind not in SOURCE_KINDS:
            raise ValueError(f"kind={kind!r} is unknown: use one of {SOURCE_KINDS}")
        if kind in ("files", "tfrecord"):
            split_patterns(pattern)
        elif not tfds_name:
            raise ValueError("kind='tfds' needs tfds_name (e.g. 'mnist' or 'my_dataset')")
        if kind == "tfrecord" and not image_key:
            raise ValueError("kind='tfrecord' needs image_key (the encoded image feature)")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise ValueError(f"limit={limit!r} must be a positive int or None (all inputs)")
        self._kind = kind
        self._pattern = pattern
        self._image_key = image_key
        self._label_key = label_key
        self._key_key = key_key
        self._tfds = (tfds_name, tfds_split, tfds_data_dir, tfds_image_feature, tfds_label_feature)
        self._limit = limit
        self._extensions = tuple(extensions) if extensions is not None else None

    def expand(self, pbegin: beam.pvalue.PBegin) -> Read:
        if self._kind == "files":
            return self._expand_files(pbegin)
        if self._kind == "tfrecord":
            return self._expand_tfrecord(pbegin)
        return self._expand_tfds(pbegin)

    def _expand_files(self, pbegin) -> Read:
        patterns = [normalise_pattern(p) for p in split_patterns(self._pattern)]
        for pattern in patterns:
            check_pattern_matches(pattern, self._extensions)
        root = common_root(patterns)
        listed = (
            pbegin
            | "Patterns" >> beam.Create(patterns)
            | "ListFiles" >> beam.ParDo(_ListFilesFn(self._extensions, root))
            # one read per file even when patterns overlap; also spreads the reads
            | "OnePerPath" >> beam.CombinePerKey(min)
        )
        if self._limit is not None:
            listed = _smallest(listed, self._limit, _listing_sort_key, "Limit") | (
                "SpreadLimited" >> beam.Reshuffle()
            )
        read = listed | "ReadFiles" >> beam.ParDo(_ReadFileFn()).with_outputs(
            FAILURES, main="images"
        )
        return Read(images=read.images, failures=read[FAILURES])

    def _expand_tfrecord(self, pbegin) -> Read:
        from apache_beam.io.tfrecordio import ReadAllFromTFRecord

        patterns = [normalise_pattern(p) for p in split_patterns(self._pattern)]
        for pattern in patterns:
            check_files_exist(pattern)
        parsed = (
            pbegin
            | "Patterns" >> beam.Create(patterns)
            | "ReadTFRecords" >> ReadAllFromTFRecord(with_filename=True)
            | "ParseExamples"
            >> beam.ParDo(
                _ParseExampleFn(
                    image_key=self._image_key, label_key=self._label_key, key_key=self._key_key
                )
            ).with_outputs(FAILURES, main="images")
        )
        images = parsed.images
        if self._limit is not None:
            images = _smallest(images, self._limit, _image_sort_key, "Limit")
        return Read(images=images, failures=parsed[FAILURES])

    def _expand_tfds(self, pbegin) -> Read:
        import tensorflow_datasets as tfds

        name, split, data_dir, image_feature, label_feature = self._tfds
        builder = _prepared_builder(name, data_dir)
        _check_tfds_features(builder, split, image_feature)
        offsets = _tfds_shard_offsets(builder)
        label = label_feature if label_feature in builder.info.features else ""
        examples = pbegin | "ReadFromTFDS" >> tfds.beam.ReadFromTFDS(
            builder, split=split, read_config=tfds.ReadConfig(add_tfds_id=True)
        )
        converted = examples | "ToEncodedImage" >> beam.ParDo(
            _TfdsExampleFn(
                name=builder.name,
                split=split,
                offsets=offsets,
                image_feature=image_feature,
                label_feature=label,
            )
        ).with_outputs(FAILURES, main="images")
        images = converted.images
        if self._limit is not None:
            images = _smallest(images, self._limit, _image_sort_key, "Limit")
        return Read(images=images, failures=converted[FAILURES])


def _prepared_builder(name: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    where = f"data_dir={data_dir!r}" if data_dir else "the default TFDS data_dir"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:
        raise ValueError(
            f"TFDS dataset {name!r} not found in {where}: "
            f"{short_error(e).splitlines()[0]}; prepare it first "
            "(`tfds build` or builder.download_and_prepare()) or set tfds_data_dir"
        ) from e
    if not builder.is_prepared():
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in {where} (nothing is downloaded at run "
            "time): run `tfds build` / tfds.builder(name).download_and_prepare() first, or "
            "set tfds_data_dir to where it was prepared"
        )
    return builder


def _check_tfds_features(builder, split: str, image_feature: str) -> None:
    features = builder.info.features
    if image_feature not in features:
        raise ValueError(
            f"TFDS dataset {builder.name!r} has no feature {image_feature!r} "
            f"(features: {sorted(features.keys())}): set tfds_image_feature"
        )
    try:
        _ = builder.info.splits[split]
    except Exception as e:
        raise ValueError(
            f"TFDS dataset {builder.name!r} has no split {split!r} "
            f"(splits: {sorted(builder.info.splits.keys())}): set tfds_split"
        ) from e


def _tfds_shard_offsets(builder) -> dict[str, tuple[str, int]]:
    """shard file name -> (split name, index of its first example within the split)."""
    offsets: dict[str, tuple[str, int]] = {}
    for split_name, info in builder.info.splits.items():
        start = 0
        for instruction in info.file_instructions:
            offsets[os.path.basename(os.fspath(instruction.filename))] = (split_name, start)
            start += int(instruction.examples_in_shard)
    return offsets


class DecodeImages(beam.PTransform):
    """PCollection[EncodedImage] -> :class:`Decoded` (items: PCollection[ImageItem], failures).

    Every input ends in exactly one output: an item at ``input_size`` (H, W) with
    ``channels`` channels, or a Failure at stage "decode" carrying the error message.
    """

    def __init__(
        self,
        *,
        input_size: tuple[int, int],
        channels: int,
        resize_policy: str,
        max_pixels: int,
    ):
        super().__init__()
        check_decode_options(
            input_size=input_size,
            channels=channels,
            resize_policy=resize_policy,
            max_pixels=max_pixels,
        )
        self._fn = _DecodeFn(
            input_size=tuple(input_size),
            channels=channels,
            resize_policy=resize_policy,
            max_pixels=max_pixels,
        )

    def expand(self, pcoll: beam.PCollection) -> Decoded:
        out = pcoll | "Decode" >> beam.ParDo(self._fn).with_outputs(FAILURES, main="items")
        return Decoded(items=out.items, failures=out[FAILURES])


# ------------------------------------------------------------------------ incremental runs

SKIPPED = "skipped"  # the tag of SkipDone's output of inputs already done


def done_token(key: str, sha256: str) -> str:
    """Identity of a done input in the incremental index: its key and content hash."""
    text = f"{key}\0{sha256}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()[:32]


def write_done_index(path: str, tokens: Iterable[str]) -> int:
    """Write the incremental index (one :func:`done_token` per line); returns its size."""
    lines = sorted(set(tokens))
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write("".join(f"{t}\n" for t in lines).encode("ascii"))
    return len(lines)


def read_done_index(path: str) -> frozenset[str]:
    """The tokens written by :func:`write_done_index`."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return frozenset(f.read().decode("ascii").split())


class Skipped(NamedTuple):
    """SkipDone's result: inputs still to do, and the keys of those already done."""

    images: beam.PCollection  # of EncodedImage
    skipped: beam.PCollection  # of str (keys)


class _SkipDoneFn(beam.DoFn):
    """EncodedImage -> itself, or its key (tag "skipped") when (key, content hash) is in
    the index. Runs before decoding: a done image costs one hash, not a decode."""

    def __init__(self, index_path: str) -> None:
        self._index_path = index_path
        self._done: frozenset[str] = frozenset()

    def setup(self) -> None:
        self._done = read_done_index(self._index_path)

    def process(self, element: EncodedImage):
        try:
            token = done_token(element.key, content_sha256(element))
        except Exception:  # no content: DecodeImages reports it as a failure
            yield element
            return
        if token in self._done:
            yield TaggedOutput(SKIPPED, element.key)
        else:
            yield element


class SkipDone(beam.PTransform):
    """PCollection[EncodedImage] -> :class:`Skipped`: drop inputs whose (key, sha256) is in
    the index file at ``index_path`` (written by :func:`write_done_index`; each worker reads
    it once, so the pipeline graph stays small however many images are done)."""

    def __init__(self, index_path: str) -> None:
        super().__init__()
        if not isinstance(index_path, str) or not index_path:
            raise ValueError(f"index_path={index_path!r} must name the done-index file")
        self._fn = _SkipDoneFn(index_path)

    def expand(self, pcoll: beam.PCollection) -> Skipped:
        out = pcoll | "SkipDone" >> beam.ParDo(self._fn).with_outputs(SKIPPED, main="images")
        return Skipped(images=out.images, skipped=out[SKIPPED])
