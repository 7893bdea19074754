"""Image input as a Beam transform: ReadImages.

``ReadImages`` turns files, TFRecords of ``tf.train.Example`` or a prepared TFDS dataset
(beam.tfds_input) into :class:`EncodedImage` records, and returns them with the
:class:`Failure` records of inputs that could not be read: nothing is dropped silently.
beam.prepare decodes them (DecodeImages) and skips what an incremental run already did.

The work is done by pure functions in :mod:`pipeline.store.listing` (which files a
pattern names, their keys) and :mod:`pipeline.store.decode` (bytes -> pixels).
"""

import os
from collections.abc import Iterable
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import TaggedOutput

from pipeline.beam.tags import FAILURES
from pipeline.beam.tfds_input import read_tfds
from pipeline.choices import BOX_FEATURES, LABEL_SOURCES, SOURCE_KINDS
from pipeline.elements import EncodedImage, Failure
from pipeline.store.decode import sha256_hex, short_error
from pipeline.store.duplicates import resolve
from pipeline.store.listing import (
    IMAGE_EXTENSIONS,
    check_files_exist,
    check_pattern_matches,
    class_folders,
    common_root,
    folder_label,
    list_pattern,
    normalise_pattern,
    printable,
    relative_key,
    split_patterns,
)
from pipeline.store.metadata import example_metadata
from pipeline.store.resize import normalised_boxes
from pipeline.store.tfrecord_scan import Corrupt, scan_file

__all__ = ["Read", "ReadImages"]


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
    """(path, key) -> EncodedImage; unreadable files -> Failure at stage "read". With class
    ``folders`` (source.labels: folders) the label is the id of the key's first folder."""

    def __init__(self, folders: tuple[str, ...] = ()) -> None:
        self._ids = {name: i for i, name in enumerate(folders)}
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
        label = folder_label(key, self._ids)
        yield EncodedImage(key=key, source=printable(path), data=data, label=label)


def _shard_paths(pattern: str) -> list[str]:
    """The TFRecord files a pattern matches (any name), sorted."""
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


class _ReadShardFn(beam.DoFn):
    """TFRecord file -> (file, serialized record) for each readable record; each damaged
    record or unreadable rest of the file -> Failure "read" keyed "<file>@<byte offset>"
    (store.tfrecord_scan says what is resumed)."""

    def __init__(self) -> None:
        self._failed = beam.metrics.Metrics.counter("sources", "corrupt_records")

    def process(self, path: str):
        for offset, item in scan_file(path):
            if isinstance(item, Corrupt):
                self._failed.inc()
                error = f"corrupt TFRecord at byte {offset}: {item.reason}"
                yield TaggedOutput(FAILURES, Failure(f"{path}@{offset}", path, "read", error))
            else:
                yield path, item


class _ResolveDuplicatesFn(beam.DoFn):
    """(key, inputs read under it) -> inputs with unique keys; extra copies -> Failure
    (the rule: store.duplicates)."""

    def __init__(self) -> None:
        self._renamed = beam.metrics.Metrics.counter("sources", "duplicate_keys")

    def process(self, element: tuple[str, Iterable[EncodedImage]]):
        key, images = element
        kept, copies = resolve(key, images)
        if len(kept) > 1 or copies:
            self._renamed.inc()
        yield from kept
        for failure in copies:
            yield TaggedOutput(FAILURES, failure)


def _keyed(image: EncodedImage) -> tuple[str, EncodedImage]:
    return image.key, image


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
        self._known = frozenset({image_key, label_key, key_key, *BOX_FEATURES})
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
        sides = [_feature_values(example, k) for k in BOX_FEATURES]
        if len({len(s) for s in sides}) != 1:
            raise ValueError(f"box features {list(BOX_FEATURES)} differ in length")
        return EncodedImage(
            key=key,
            source=filename,
            data=images[0],
            label=int(labels[0]) if labels else -1,
            boxes=normalised_boxes(list(zip(*sides))),
            metadata=example_metadata(example.features.feature, skip=self._known),
        )


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


class UniqueKeys(beam.PTransform):
    """PCollection[EncodedImage] -> :class:`Read`: one input per key (store.duplicates)."""

    def expand(self, images):
        resolved = (
            images
            | "ByKey" >> beam.Map(_keyed)
            | "GroupByKey" >> beam.GroupByKey()
            | "Resolve" >> beam.ParDo(_ResolveDuplicatesFn()).with_outputs(FAILURES, main="images")
        )
        return Read(images=resolved.images, failures=resolved[FAILURES])


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
    ``labels="folders"`` (files only): the label of a file is the id of its first folder
    below the patterns' common root, ids in sorted folder-name order (-1 for a file
    directly under the root).

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
        labels: str = "",
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
        if labels not in LABEL_SOURCES:
            raise ValueError(f"labels={labels!r} is unknown: use one of {LABEL_SOURCES}")
        if labels and kind != "files":
            raise ValueError(f"labels={labels!r} applies to kind='files' only (kind={kind!r})")
        self._labels = labels
        self._extensions = tuple(extensions) if extensions is not None else None

    def expand(self, pbegin):
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
        folders = class_folders(root) if self._labels == "folders" else ()
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
        read = listed | "ReadFiles" >> beam.ParDo(_ReadFileFn(folders)).with_outputs(
            FAILURES, main="images"
        )
        return Read(images=read.images, failures=read[FAILURES])

    def _expand_tfrecord(self, pbegin) -> Read:
        patterns = [normalise_pattern(p) for p in split_patterns(self._pattern)]
        for pattern in patterns:
            check_files_exist(pattern)
        shards = (
            pbegin
            | "Patterns" >> beam.Create(patterns)
            | "ListShards" >> beam.FlatMap(_shard_paths)
            # one read per shard even when patterns overlap; also spreads the shards
            | "OnePerShard" >> beam.Distinct()
            | "ReadShards" >> beam.ParDo(_ReadShardFn()).with_outputs(FAILURES, main="records")
        )
        parsed = shards.records | "ParseExamples" >> beam.ParDo(
            _ParseExampleFn(
                image_key=self._image_key, label_key=self._label_key, key_key=self._key_key
            )
        ).with_outputs(FAILURES, main="images")
        unique = parsed.images | "UniqueKeys" >> UniqueKeys()
        failures = (shards[FAILURES], parsed[FAILURES], unique.failures) | (
            "ReadFailures" >> beam.Flatten()
        )
        images = unique.images
        if self._limit is not None:
            images = _smallest(images, self._limit, _image_sort_key, "Limit")
        return Read(images=images, failures=failures)

    def _expand_tfds(self, pbegin) -> Read:
        name, split, data_dir, image_feature, label_feature = self._tfds
        images, failures = read_tfds(
            pbegin,
            name=name,
            split=split,
            data_dir=data_dir,
            image_feature=image_feature,
            label_feature=label_feature,
        )
        unique = images | "UniqueKeys" >> UniqueKeys()
        failures = (failures, unique.failures) | "ReadFailures" >> beam.Flatten()
        images = unique.images
        if self._limit is not None:
            images = _smallest(images, self._limit, _image_sort_key, "Limit")
        return Read(images=images, failures=failures)
