"""Tests for pipeline.sources: the ReadImages / DecodeImages PTransforms on files, an
object store, TFRecords and a TFDS dataset built here (all offline)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from apache_beam.io.filesystem import FileMetadata, FileSystem
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.beam import prepare as P
from pipeline.beam import sources as S
from pipeline.store import decode as D
from pipeline.store import listing as L
from pipeline.testing.images import BIG, decode

# Not the default DirectRunner: in Beam 2.77 it first tries Prism, which downloads a binary.
RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def _pipeline() -> BeamTestPipeline:
    return BeamTestPipeline(runner=RUNNER)


def test_transforms_validate_arguments():
    with pytest.raises(ValueError, match="kind='folder'"):
        S.ReadImages(kind="folder", pattern="x")
    with pytest.raises(ValueError, match="pattern"):
        S.ReadImages(kind="files", pattern=" , ")
    with pytest.raises(ValueError, match="tfds_name"):
        S.ReadImages(kind="tfds")
    with pytest.raises(ValueError, match="limit=0"):
        S.ReadImages(kind="files", pattern="x", limit=0)
    with pytest.raises(ValueError, match="policy"):
        P.DecodeImages(input_size=(8, 8), channels=3, resize_policy="crop", max_pixels=BIG)
    with pytest.raises(ValueError, match="size"):
        P.DecodeImages(input_size=(8,), channels=3, resize_policy="resize", max_pixels=BIG)


# ----------------------------------------------------------------------- Beam


def _key_stage(failure) -> tuple[str, str]:
    return failure.key, failure.stage


def _key(element) -> str:
    return element.key


def _pixel_bytes(item) -> bytes:
    return item.pixels.tobytes()


def _item_summary(item) -> tuple:
    return (
        item.key,
        item.label,
        item.sha256,
        item.pixels.shape,
        item.original_height,
        item.original_width,
    )


@pytest.fixture()
def image_tree(tmp_path, photos) -> Path:
    root = tmp_path / "imgs"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "photo0.jpg").write_bytes(photos["grace_hopper.jpg"])
    (root / "a" / "b" / "photo1.PNG").write_bytes(photos["astronaut.png"])
    (root / "top.png").write_bytes(photos["chelsea.png"])
    (root / "notes.txt").write_text("not an image")
    (root / "bad.jpg").write_text("<html><body>moved</body></html>")
    os.symlink(root / "missing.jpg", root / "dangling.jpg")
    return root


def test_files_pipeline_items_and_failures(image_tree, photos):
    root = str(image_tree)
    sha = {k: D.sha256_hex(photos[n]) for k, n in [
        ("a/photo0.jpg", "grace_hopper.jpg"),
        ("a/b/photo1.PNG", "astronaut.png"),
        ("top.png", "chelsea.png"),
    ]}  # fmt: skip
    with _pipeline() as p:
        read = p | "ReadAll" >> S.ReadImages(kind="files", pattern=f"{root}/**/*")
        decoded = read.images | "DecodeAll" >> P.DecodeImages(
            input_size=(8, 8), channels=3, resize_policy="center_crop", max_pixels=BIG
        )
        assert_that(
            decoded.items | "Summaries" >> beam.Map(_item_summary),
            equal_to([(k, -1, sha[k], (8, 8, 3), 48, 64) for k in sha]),
            label="CheckItems",
        )
        failures = (read.failures, decoded.failures) | "AllFailures" >> beam.Flatten()
        assert_that(
            failures | "FailureKeys" >> beam.Map(_key_stage),
            equal_to([("dangling.jpg", "read"), ("bad.jpg", "decode")]),
            label="CheckFailures",
        )
        # Globs are case-sensitive ('*.png' misses photo1.PNG); keys are relative to the
        # patterns' common root (never two files under one key); a file matched twice is
        # read once.
        overlap = p | "ReadOverlap" >> S.ReadImages(
            kind="files",
            pattern=f"{root}/**/*.png, {root}/top.png, {root}/a/**, {root}/**/*.jpg",
        )
        assert_that(
            overlap.images | "OverlapKeys" >> beam.Map(_key),
            equal_to(["top.png", "a/photo0.jpg", "a/b/photo1.PNG", "bad.jpg"]),
            label="CheckOverlap",
        )
        limited = p | "ReadLimited" >> S.ReadImages(kind="files", pattern=f"{root}/", limit=2)
        assert_that(
            limited.images | "LimitedKeys" >> beam.Map(_key),
            equal_to(["a/b/photo1.PNG", "a/photo0.jpg"]),  # the two smallest keys
            label="CheckLimited",
        )


def test_decoded_item_pixels_match_the_pure_functions(image_tree, photos):
    expected = D.resize(decode(photos["chelsea.png"]), (6, 10), "resize")
    with _pipeline() as p:
        read = p | S.ReadImages(kind="files", pattern=f"{image_tree}/top.png")
        decoded = read.images | P.DecodeImages(
            input_size=(6, 10), channels=3, resize_policy="resize", max_pixels=BIG
        )
        assert_that(
            decoded.items | beam.Map(_pixel_bytes),
            equal_to([expected.tobytes()]),
        )


def test_files_patterns_that_match_nothing_fail_at_construction(image_tree):
    p = beam.Pipeline(runner=RUNNER)
    with pytest.raises(ValueError, match="matches no image file"):
        _ = p | "Missing" >> S.ReadImages(kind="files", pattern=f"{image_tree}/nope/*.jpg")
    with pytest.raises(ValueError, match="none has an image extension"):
        _ = p | "TextOnly" >> S.ReadImages(kind="files", pattern=f"{image_tree}/*.txt")
    with pytest.raises(ValueError, match="matches no file"):
        _ = p | "NoRecords" >> S.ReadImages(kind="tfrecord", pattern=f"{image_tree}/*.tfrecord")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_a_read_failure(tmp_path, photos):
    (tmp_path / "ok.png").write_bytes(photos["coffee.png"])
    locked = tmp_path / "locked.png"
    locked.write_bytes(photos["coffee.png"])
    locked.chmod(0)
    with _pipeline() as p:
        read = p | S.ReadImages(kind="files", pattern=f"{tmp_path}/*.png")
        assert_that(read.images | "Keys" >> beam.Map(_key), equal_to(["ok.png"]), label="Ok")
        assert_that(
            read.failures | "Failures" >> beam.Map(_key_stage),
            equal_to([("locked.png", "read")]),
            label="Failed",
        )


class MemoryFileSystem(FileSystem):
    """A flat object store like GCS or S3 (no directories) under ``memtest://``.

    A value of None is an object that is listed but cannot be read (permissions)."""

    OBJECTS: dict[str, bytes | None] = {}

    @classmethod
    def scheme(cls):
        return "memtest"

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *paths])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def has_dirs(self):
        return False

    def _list(self, prefix):
        for path, data in sorted(self.OBJECTS.items()):
            if path.startswith(prefix):
                yield FileMetadata(path, len(data or b""))

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        data = self.OBJECTS.get(path)
        if data is None:
            raise PermissionError(f"403 Forbidden: {path}")
        return io.BytesIO(data)

    def exists(self, path):
        return path in self.OBJECTS

    def size(self, path):
        return len(self.OBJECTS[path] or b"")

    def metadata(self, path):
        return FileMetadata(path, self.size(path))

    def last_updated(self, path):
        return 0.0

    def mkdirs(self, path):
        raise NotImplementedError

    def create(self, path, mime_type="application/octet-stream", compression_type=None):
        raise NotImplementedError

    def copy(self, source_file_names, destination_file_names):
        raise NotImplementedError

    def rename(self, source_file_names, destination_file_names):
        raise NotImplementedError

    def delete(self, paths):
        raise NotImplementedError


@pytest.fixture()
def object_store(photos):
    MemoryFileSystem.OBJECTS = {
        "memtest://bucket/imgs/a.jpg": photos["rocket.jpg"],
        "memtest://bucket/imgs/sub/": b"",  # a "directory" placeholder object
        "memtest://bucket/imgs/sub/b.png": photos["coffee.png"],
        "memtest://bucket/imgs/sub/readme.txt": b"text",
        "memtest://bucket/imgs/sub/locked.jpg": None,
        "memtest://bucket/other/c.jpg": photos["rocket.jpg"],
    }
    yield "memtest://bucket"
    MemoryFileSystem.OBJECTS = {}


def test_object_store_listing(object_store):
    def keys(pattern):
        return sorted(k for _, k in L.list_pattern(f"{object_store}/{pattern}"))

    assert keys("imgs/**") == ["a.jpg", "sub/b.png", "sub/locked.jpg"]
    assert keys("imgs/**/*.jpg") == ["a.jpg", "sub/locked.jpg"]
    assert keys("imgs/*") == ["a.jpg"]
    assert keys("imgs/sub/b.png") == ["b.png"]
    with pytest.raises(ValueError, match="none has an image extension"):
        keys("imgs/**/*.txt")
    p = beam.Pipeline(runner=RUNNER)
    # '**/' may match no directory: only imgs/a.jpg matches, construction still passes.
    _ = p | "TopOnly" >> S.ReadImages(kind="files", pattern=f"{object_store}/imgs/**/a.jpg")
    with pytest.raises(ValueError, match="matches no image file"):
        _ = p | "Missing" >> S.ReadImages(kind="files", pattern=f"{object_store}/nope/*.jpg")


def test_object_store_pipeline(object_store, photos):
    with _pipeline() as p:
        read = p | S.ReadImages(kind="files", pattern=f"{object_store}/imgs/**")
        assert_that(
            read.images | "Images" >> beam.Map(_source_and_key),
            equal_to(
                [
                    ("memtest://bucket/imgs/a.jpg", "a.jpg"),
                    ("memtest://bucket/imgs/sub/b.png", "sub/b.png"),
                ]
            ),
            label="CheckImages",
        )
        assert_that(
            read.failures | "Failures" >> beam.Map(_key_stage),
            equal_to([("sub/locked.jpg", "read")]),
            label="CheckFailures",
        )


def _source_and_key(image) -> tuple[str, str]:
    return image.source, image.key


def _example(features: dict) -> bytes:
    feature = {}
    for name, value in features.items():
        if isinstance(value, bytes):
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        elif isinstance(value, float):
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        else:
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString()


def _basename_summary(image) -> tuple:
    return image.key, image.label, os.path.basename(image.source)


def test_tfrecord_pipeline(tmp_path, photos):
    jpeg, png = photos["rocket.jpg"], photos["coffee.png"]
    records = [
        _example({"image/encoded": jpeg, "image/class/label": 3, "image/key": b"cat/1"}),
        _example({"image/encoded": png}),  # no label, no key: -1 and the content hash
        _example({"image/class/label": 1}),  # no image
        _example({"image/encoded": jpeg, "image/class/label": 0.5, "image/key": b"floaty"}),
        b"\xff" * 8,  # not a tf.train.Example
        _example({"image/encoded": b"<html>not an image</html>", "image/key": b"html"}),
    ]
    shard = tmp_path / "data.tfrecord-00000-of-00001"
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for record in records:
            writer.write(record)
    with _pipeline() as p:
        read = p | S.ReadImages(
            kind="tfrecord", pattern=f"{tmp_path}/*.tfrecord*", key_key="image/key"
        )
        decoded = read.images | P.DecodeImages(
            input_size=(4, 4), channels=1, resize_policy="resize", max_pixels=BIG
        )
        assert_that(
            read.images | "Images" >> beam.Map(_basename_summary),
            equal_to(
                [
                    ("cat/1", 3, shard.name),
                    (D.sha256_hex(png), -1, shard.name),
                    ("html", -1, shard.name),
                ]
            ),
            label="CheckImages",
        )
        assert_that(
            read.failures | "ReadFailures" >> beam.Map(_key_stage),
            equal_to(
                [(D.sha256_hex(records[2]), "read"), ("floaty", "read")]
                + [(D.sha256_hex(records[4]), "read")]
            ),
            label="CheckReadFailures",
        )
        assert_that(
            decoded.items | "Items" >> beam.Map(_item_summary),
            equal_to(
                [
                    ("cat/1", 3, D.sha256_hex(jpeg), (4, 4, 1), 48, 64),
                    (D.sha256_hex(png), -1, D.sha256_hex(png), (4, 4, 1), 48, 64),
                ]
            ),
            label="CheckItems",
        )
        assert_that(
            decoded.failures | "DecodeFailures" >> beam.Map(_key_stage),
            equal_to([("html", "decode")]),
            label="CheckDecodeFailures",
        )


TFDS_IMAGES = [np.random.default_rng(i).integers(0, 256, (5 + i, 4, 3), np.uint8) for i in range(5)]


class TinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Five random images in "train", two in "test"; labels i % 3."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = None  # no checksums file to look for (and no importlib_resources needed)

    def _info(self):
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(num_classes=3),
            }
        )
        return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(5), "test": self._generate_examples(2)}

    def _generate_examples(self, count):
        for i in range(count):
            yield f"{i:03d}", {"image": TFDS_IMAGES[i], "label": i % 3}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    TinyImages(data_dir=data_dir).download_and_prepare()
    return data_dir


def _read_tiny_images(p, label: str, tfds_dir: str, split: str):
    return p | label >> S.ReadImages(
        kind="tfds", tfds_name="tiny_images", tfds_data_dir=tfds_dir, tfds_split=split
    )


def test_tfds_pipeline(tfds_dir):
    def expected(split, indices):
        return [
            (f"tiny_images/{split}/{i}", i % 3, D.sha256_hex(TFDS_IMAGES[i].tobytes()))
            for i in indices
        ]

    with _pipeline() as p:
        read = p | "ReadTrain" >> S.ReadImages(
            kind="tfds", tfds_name="tiny_images", tfds_data_dir=tfds_dir
        )
        decoded = read.images | "Decode" >> P.DecodeImages(
            input_size=(4, 4), channels=3, resize_policy="center_crop", max_pixels=BIG
        )
        assert_that(
            decoded.items | "Items" >> beam.Map(_item_sha),
            equal_to(expected("train", range(5))),
            label="CheckTrain",
        )
        no_failures = (read.failures, decoded.failures) | "Failures" >> beam.Flatten()
        assert_that(no_failures, equal_to([]), label="CheckNoFailures")
        sub = _read_tiny_images(p, "ReadSubsplits", tfds_dir, "train[2:4]+test")
        assert_that(
            sub.images | "SubKeys" >> beam.Map(_key),
            equal_to(["tiny_images/train/2", "tiny_images/train/3"] + [
                "tiny_images/test/0", "tiny_images/test/1"
            ]),
            label="CheckSubsplits",
        )  # fmt: skip
        # train[0:3]+train[1:4] names examples 1 and 2 twice: each is read once and each
        # extra copy is a read failure (store.duplicates), the same on every run
        overlap = _read_tiny_images(p, "ReadOverlapping", tfds_dir, "train[0:3]+train[1:4]")
        assert_that(
            overlap.images | "OverlapKeys" >> beam.Map(_key),
            equal_to([f"tiny_images/train/{i}" for i in range(4)]),
            label="CheckOverlapImages",
        )
        assert_that(
            overlap.failures | "OverlapFailures" >> beam.Map(_key_stage),
            equal_to([(f"tiny_images/train/{i}.copy-2", "read") for i in (1, 2)]),
            label="CheckOverlapCopies",
        )


def _item_sha(item) -> tuple:
    return item.key, item.label, item.sha256


def test_tfds_not_prepared_or_wrong_feature_fails_at_construction(tmp_path, tfds_dir):
    p = beam.Pipeline(runner=RUNNER)
    with pytest.raises(ValueError, match="download_and_prepare"):
        _ = p | "Missing" >> S.ReadImages(
            kind="tfds", tfds_name="tiny_images", tfds_data_dir=str(tmp_path)
        )
    with pytest.raises(ValueError, match="no feature 'picture'"):
        _ = p | "Feature" >> S.ReadImages(
            kind="tfds",
            tfds_name="tiny_images",
            tfds_data_dir=tfds_dir,
            tfds_image_feature="picture",
        )
    with pytest.raises(ValueError, match="no split 'validation'"):
        _ = p | "Split" >> S.ReadImages(
            kind="tfds", tfds_name="tiny_images", tfds_data_dir=tfds_dir, tfds_split="validation"
        )


@pytest.mark.slow
def test_tfds_full_run_with_label_targets(tfds_dir, tmp_path):
    """A whole run() over the TFDS split: every example explained for its label."""
    import keras

    from pipeline.beam.run import run
    from pipeline.config.files import load_config
    from pipeline.store import records

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3))
    hidden = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(hidden)
    outputs = keras.layers.Dense(3, activation="softmax")(pooled)
    keras.Model(inputs, outputs).save(tmp_path / "tiny.keras")
    config = load_config(
        None,
        [
            f"model.name={tmp_path / 'tiny.keras'}",
            "model.preprocessing=unit",
            "source.kind=tfds",
            "source.tfds_name=tiny_images",
            f"source.tfds_data_dir={tfds_dir}",
            "saliency.methods=[vanilla]",
            "saliency.target=label",
            "saliency.precision=float32",
            "batch.max_batch_size=2",
            f"output.dir={tmp_path / 'out'}",
        ],
    )
    summary = run(config, ["--runner=DirectRunner"])
    assert (summary.inputs, summary.images_written, summary.images_failed) == (5, 5, 0)
    decoded = sorted(records.read(f"{tmp_path / 'out'}/records/*.tfrecord"), key=lambda r: r.key)
    assert [r.key for r in decoded] == [f"tiny_images/train/{i}" for i in range(5)]
    assert [r.target_class for r in decoded] == [i % 3 for i in range(5)]
    assert all(np.abs(r.gradients["vanilla"]).max() > 0 for r in decoded)


BOXES = [[[0.1, 0.2, 0.5, 0.75]], [[0.0, 0.0, 1.0, 0.5], [0.25, 0.25, 0.75, 0.75]]]


class TinyBoxes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Two images with objects/bbox (normalised, as TFDS detection datasets have them)."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = None

    def _info(self):
        features = tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "objects": tfds.features.Sequence({"bbox": tfds.features.BBoxFeature()}),
        })  # fmt: skip
        return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, boxes in enumerate(BOXES):
            bbox = [tfds.features.BBox(*b) for b in boxes]
            yield f"{i:03d}", {"image": TFDS_IMAGES[i], "objects": {"bbox": bbox}}


def _key_boxes(image) -> tuple:
    return image.key, [tuple(round(v, 6) for v in b) for b in image.boxes]


def test_tfds_objects_bbox_become_the_images_boxes(tmp_path):
    TinyBoxes(data_dir=str(tmp_path)).download_and_prepare()
    with _pipeline() as p:
        read = p | S.ReadImages(kind="tfds", tfds_name="tiny_boxes", tfds_data_dir=str(tmp_path))
        assert_that(
            read.images | beam.Map(_key_boxes),
            equal_to([(f"tiny_boxes/train/{i}", [tuple(b) for b in boxes])
                      for i, boxes in enumerate(BOXES)]),
        )  # fmt: skip
