"""TFDS input: a prepared TensorFlow Datasets split as EncodedImage (pixels decoded by TFDS).

Nothing is downloaded at run time: the dataset must already be prepared in its data_dir.
tensorflow-datasets is the ``[tfds]`` extra: it is imported only when a job reads TFDS
(preflight says how to install it when it is missing).
"""

import os

import apache_beam as beam
import numpy as np
from apache_beam.pvalue import TaggedOutput

from pipeline.beam.tags import FAILURES
from pipeline.elements import EncodedImage, Failure
from pipeline.store.decode import sha256_hex, short_error
from pipeline.store.resize import normalised_boxes


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
            boxes = ()
            objects = example.get("objects")
            if isinstance(objects, dict) and "bbox" in objects:
                boxes = normalised_boxes(_to_numpy(objects["bbox"]))
            key = self._key(tfds_id, pixels)
        except Exception as e:
            self._failed.inc()
            key = f"{self._name}/{self._split}/{tfds_id or 'unknown'}"
            failure = Failure(key, f"tfds:{self._name}:{tfds_id}", "read", short_error(e))
            yield TaggedOutput(FAILURES, failure)
            return
        yield EncodedImage(
            key=key,
            source=f"tfds:{self._name}:{tfds_id}",
            pixels=pixels,
            label=label,
            boxes=boxes,
        )


def read_tfds(
    pbegin: beam.pvalue.PBegin,
    *,
    name: str,
    split: str,
    data_dir: str | None,
    image_feature: str,
    label_feature: str,
) -> tuple[beam.PCollection, beam.PCollection]:
    """(images, failures) of a prepared TFDS dataset split (never downloaded)."""
    import tensorflow_datasets as tfds  # the [tfds] extra

    builder = _prepared_builder(tfds, name, data_dir)
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
    return converted.images, converted[FAILURES]


def _prepared_builder(tfds, name: str, data_dir: str | None):
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
