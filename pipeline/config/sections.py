"""Typed, frozen configuration: every user setting, its default and its check, once.

A config is a YAML file of eight sections (model, source, saliency, batch, output, run,
audit, beam); ``--set section.key=value`` overrides are applied on top (values parsed as
YAML). Every check runs at construction, so a bad value fails before any pipeline is built, with a
message naming the key, the value given, what is allowed and how to fix it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

from pipeline.choices import (
    ARTIFACT_VIEWS,
    AUDIT_DRIFT,
    DEFAULT_MAX_PIXELS,
    DEFAULT_RESIZE,
    DEFAULT_THRESHOLD,
    DRIFT_RULE,
    GRADIENT_ENCODINGS,
    HEADS,
    LABEL_SOURCES,
    PREPROCESSING_MODES,
    RESIZE_POLICIES,
    SOURCE_KINDS,
)
from pipeline.config.audit import AuditConfig
from pipeline.config.beam import BeamConfig
from pipeline.config.checks import (
    check_choice,
    check_int,
    check_number,
    check_str,
    fail,
)
from pipeline.config.saliency import SaliencyConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Which classifier to explain and how its inputs are prepared."""

    # A keras.applications name (`MobileNetV2`, `ResNet50`, `EfficientNetB0`, ...) or a
    # `.keras` / `.h5` / SavedModel path (local, gs://, s3://).
    name: str = "examples/model/shapes_cnn.keras"
    # Named models only: `imagenet`, null (random weights, for tests) or a local weights file.
    weights: str | None = "imagenet"
    # How raw pixels 0..255 become model input: `none` (0..255), `unit` (/255), `symmetric`
    # ([-1, 1]), `caffe`, `torch`, `auto` (a keras.applications model's `preprocess_input`).
    preprocessing: str = "unit"
    # `[height, width]`; null: read from the model.
    input_size: tuple[int, int] | None = None
    # Keras safe mode for model files: Lambda code runs only when set to false.
    safe_mode: bool = True
    # Import paths `module:attr` of the custom layers / functions a model file needs
    # (loaded in safe mode).
    custom_objects: tuple[str, ...] = ()
    # A list, or a file: one name per line, a JSON list, or Keras's
    # `imagenet_class_index.json` (`{"0": ["n01440764", "tench"], ...}`: keep a local copy,
    # Keras downloads it). Must match the model's class count (checked before any data is
    # read). Empty: class ids only.
    class_names: tuple[str, ...] | str = ()
    # How logits become probabilities: `auto` (sigmoid where the model ends in a sigmoid,
    # else softmax), `softmax`, or `sigmoid` (multi-label: one probability per class, e.g.
    # a model trained on logits with binary cross-entropy). Maps are taken at the logits.
    head: str = "auto"

    def __post_init__(self) -> None:
        check_str("model.name", self.name)
        check_choice("model.head", self.head, HEADS)
        names = self.class_names
        if isinstance(names, list):
            object.__setattr__(self, "class_names", tuple(names))
        elif not isinstance(names, (str, tuple)):
            fail("model.class_names", names, "a list of names or the path of a names file",
                 "write e.g. class_names: examples/model/shapes_cnn.classes.txt")  # fmt: skip
        if isinstance(self.class_names, tuple) and not all(
            isinstance(n, str) for n in self.class_names
        ):
            fail("model.class_names", names, "every name must be a string", "quote the names")
        if self.weights is not None:
            check_str("model.weights", self.weights)
        check_choice("model.preprocessing", self.preprocessing, PREPROCESSING_MODES)
        if self.input_size is not None:
            size = self.input_size
            if (
                not isinstance(size, (tuple, list))
                or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
            ):
                fail("model.input_size", size, "it must be two positive integers [height, "
                     "width] or null", "write e.g. input_size: [224, 224]")  # fmt: skip
            object.__setattr__(self, "input_size", tuple(size))
        if not isinstance(self.safe_mode, bool):
            fail("model.safe_mode", self.safe_mode, "true or false is required")
        objects = (
            (self.custom_objects,)
            if isinstance(self.custom_objects, str)
            else (self.custom_objects)
        )
        if not isinstance(objects, (list, tuple)) or not all(
            isinstance(o, str) and all(o.partition(":")[::2]) for o in objects
        ):
            fail("model.custom_objects", self.custom_objects, "a list of import paths "
                 "'module:attr' is required", "e.g. ['my_project.layers:MyLayer']")  # fmt: skip
        object.__setattr__(self, "custom_objects", tuple(objects))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """Where the images come from and how they are decoded and resized."""

    # `files`, `tfrecord` (of tf.train.Example) or `tfds` (a prepared dataset; needs the
    # `[tfds]` extra).
    kind: str = "files"
    # files: comma-separated globs on any Beam filesystem (local, gs://, s3://); `*` stays in
    # a directory, `**` recurses, a trailing `/` means everything below. tfrecord: globs of
    # TFRecord files (`.gz` read by name).
    pattern: str = "examples/images/*"
    # tfrecord: the feature holding the encoded image.
    image_key: str = "image/encoded"
    # tfrecord: the int64 label feature (absent: -1; "" for none).
    label_key: str = "image/class/label"
    # tfrecord: the feature holding each image's key; "" or absent: the image's sha256.
    key_key: str = ""
    # tfds: the dataset name (prepared under `tfds_data_dir`; never downloaded).
    tfds_name: str = ""
    # tfds: the split, slicing included (`train[:10%]+test`).
    tfds_split: str = "train"
    # tfds: where the dataset was prepared; null: TFDS's default.
    tfds_data_dir: str | None = None
    # tfds: the image feature.
    tfds_image_feature: str = "image"
    # tfds: the label feature (absent from the dataset: labels -1).
    tfds_label_feature: str = "label"
    # `resize` (plain bilinear to the input size) or `center_crop` (the shorter side to the
    # input size, then the centre).
    resize: str = DEFAULT_RESIZE
    # Larger images are rejected from their header, before a full decode (decompression
    # bombs); Pillow's own limit follows it.
    max_pixels: int = DEFAULT_MAX_PIXELS
    # Only the first N inputs (by key), for a smoke run; null: all.
    limit: int | None = None
    # files: "" or `folders`: a file's label is the id of its folder below the patterns'
    # root, folders in sorted order (Keras's image_dataset_from_directory layout); the
    # folder names are the class names unless model.class_names is set.
    labels: str = ""

    def __post_init__(self) -> None:
        check_choice("source.kind", self.kind, SOURCE_KINDS)
        if self.kind in ("files", "tfrecord"):
            check_str("source.pattern", self.pattern)
        else:
            check_str("source.tfds_name", self.tfds_name)
            check_str("source.tfds_split", self.tfds_split)
        check_str("source.image_key", self.image_key)
        check_str("source.label_key", self.label_key, empty_ok=True)
        check_str("source.key_key", self.key_key, empty_ok=True)
        check_choice("source.resize", self.resize, RESIZE_POLICIES)
        check_int("source.max_pixels", self.max_pixels, minimum=1)
        if self.limit is not None:
            check_int("source.limit", self.limit, minimum=1)
        check_choice("source.labels", self.labels, LABEL_SOURCES)
        if self.labels and self.kind != "files":
            fail("source.labels", self.labels, f"it applies to kind 'files' only (kind is "
                 f"{self.kind!r})", "remove source.labels, or use label_key / "
                 "tfds_label_feature for TFRecord / TFDS labels")  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchConfig:
    """How many images go through the model together (the GPU-sized batch)."""

    # Images per model batch (the GPU-sized batch).
    max_batch_size: int = 32
    # null: equal to max_batch_size. Full batches keep one compiled shape busy; a smaller
    # minimum lets BatchElements start with small batches (each padded to the max).
    min_batch_size: int | None = None
    # Seconds a partial batch may wait for more images (streaming-friendly; 0 disables).
    max_batch_duration_secs: float = 0.0

    def __post_init__(self) -> None:
        check_int("batch.max_batch_size", self.max_batch_size, minimum=1, maximum=4096)
        if self.min_batch_size is None:
            object.__setattr__(self, "min_batch_size", self.max_batch_size)
        check_int("batch.min_batch_size", self.min_batch_size, minimum=1)
        if self.min_batch_size > self.max_batch_size:
            fail(
                "batch.min_batch_size",
                self.min_batch_size,
                f"it must be <= batch.max_batch_size ({self.max_batch_size})",
                "lower min_batch_size",
            )
        check_number("batch.max_batch_duration_secs", self.max_batch_duration_secs, minimum=0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutputConfig:
    """What is written where."""

    # A local path, gs:// or s3://.
    dir: str = "out/local"
    # Write the TFRecords.
    records: bool = True
    # Write the PNG artifacts.
    artifacts: bool = True
    # Which PNGs per image and method: `heatmap`, `overlay`, `grid`.
    views: tuple[str, ...] = ARTIFACT_VIEWS
    # TFRecord shards; 0: the runner decides.
    num_shards: int = 0
    # Store the model-input-size image as PNG inside each record.
    include_image: bool = True
    # How gradients are stored: `compact` (byte-shuffled zlib, lossless, ~0.87x the bytes;
    # tf.data decodes it with store.gradient_codec.tf_decode) or `tensor` (the bytes
    # tf.io.parse_tensor reads). Readers take either.
    gradient_encoding: str = GRADIENT_ENCODINGS[0]
    # PNG artifacts are upscaled (nearest neighbour, by the integer factor
    # ceil(min_artifact_size / min(H, W)); 1 when the input is that large already), so that
    # small models' maps stay visible.
    min_artifact_size: int = 192
    # Local output dirs: what the run wrote is flushed and each file and directory entry
    # synced before the publish renames that depend on them, so a power loss cannot leave a
    # manifest naming lost files (cost: benchmarks/RESULTS.md, 2026-12-03). Object stores:
    # an upload is durable once complete; ignored.
    fsync: bool = True

    def __post_init__(self) -> None:
        check_str("output.dir", self.dir)
        for flag in ("records", "artifacts", "include_image", "fsync"):
            if not isinstance(getattr(self, flag), bool):
                fail(f"output.{flag}", getattr(self, flag), "true or false is required")
        views = self.views
        if isinstance(views, str):
            views = tuple(v.strip() for v in views.split(",") if v.strip())
        for view in views:
            check_choice("output.views", view, ARTIFACT_VIEWS)
        object.__setattr__(self, "views", tuple(views))
        check_choice("output.gradient_encoding", self.gradient_encoding, GRADIENT_ENCODINGS)
        check_int("output.num_shards", self.num_shards, minimum=0, maximum=100_000)
        check_int("output.min_artifact_size", self.min_artifact_size, minimum=1, maximum=4096)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Run-level policy: identity, failure budget, incremental mode."""

    # Provenance id written into every record; empty: derived from the config (so a rerun
    # of the same config writes identical records).
    id: str = ""
    # Above this fraction of failed inputs the run exits with code 3 (outputs kept).
    max_failure_fraction: float = 0.25
    # Skip images already done for the same (content, model, method settings).
    incremental: bool = False
    # Without a terminal: a progress line every N images (per worker process; 0: off).
    progress_every: int = 100
    # `previous`: compare each audit with the latest under output.dir/audits/ (drift in
    # audit/drift.json and the report); "": no comparison.
    audit_drift: str = ""
    # Drift rules (METRIC[@METHOD][[SLICE]]:CHANGE, e.g. pointing:-0.05, energy_in_box:-10%,
    # pointing@guided[site=B]:-0.05); a broken one makes the run exit with code 6 after
    # everything is written.
    audit_fail_on: tuple[str, ...] = ()
    # On gs:// and s3:// the run holds output.dir with a lock object it renews every third
    # of this; a lock not renewed for this long is stale (its run died) and is taken over.
    lock_ttl_s: int = 120

    def __post_init__(self) -> None:
        check_str("run.id", self.id, empty_ok=True)
        check_int("run.lock_ttl_s", self.lock_ttl_s, minimum=3, maximum=86_400)
        check_number("run.max_failure_fraction", self.max_failure_fraction, minimum=0, maximum=1)
        if not isinstance(self.incremental, bool):
            fail("run.incremental", self.incremental, "true or false is required")
        check_int("run.progress_every", self.progress_every, minimum=0)
        check_choice("run.audit_drift", self.audit_drift, AUDIT_DRIFT)
        if isinstance(self.audit_fail_on, list):
            object.__setattr__(self, "audit_fail_on", tuple(self.audit_fail_on))
        if not isinstance(self.audit_fail_on, tuple):
            fail("run.audit_fail_on", self.audit_fail_on, "a list of rules is required",
                 "write e.g. [pointing:-0.05, energy_in_box:-10%]")  # fmt: skip
        for rule in self.audit_fail_on:
            if not isinstance(rule, str) or not re.match(DRIFT_RULE, rule.strip()):
                fail("run.audit_fail_on", rule, "a rule is METRIC[@METHOD][[SLICE]]:CHANGE",
                     "write e.g. pointing:-0.05 or energy_in_box:-10%")  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """The whole job."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    source: SourceConfig = dataclasses.field(default_factory=SourceConfig)
    saliency: SaliencyConfig = dataclasses.field(default_factory=SaliencyConfig)
    batch: BatchConfig = dataclasses.field(default_factory=BatchConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    audit: AuditConfig = dataclasses.field(default_factory=AuditConfig)
    beam: BeamConfig = dataclasses.field(default_factory=BeamConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, not tuples) for YAML/JSON."""
        data = dataclasses.asdict(self)
        data["beam"] = dict(self.beam.options)
        return json.loads(json.dumps(data))

    def fingerprint(self) -> str:
        """Hash of every setting that changes what is computed (not where it is written)."""
        data = self.to_dict()
        data["output"].pop("dir")
        data["output"].pop("fsync")  # how durably it is written, not what
        data["output"].pop("gradient_encoding")  # how maps are stored, not what they are
        data.pop("beam")  # where and how it runs, not what it computes
        # Keys added after outputs existed hash only when set: at their default they compute
        # what the version before them did, so an upgrade does not redo a whole output.
        for (section, key), default in _LATER_KEYS.items():
            if data[section][key] == default:
                data[section].pop(key)
        for key in ("progress_every", "audit_drift", "audit_fail_on", "lock_ttl_s"):
            data["run"].pop(key)
        # The audit reads records and changes nothing in them but the deletion / insertion
        # curves the handler adds when it is on.
        audit = data.pop("audit")
        if self.audit.faithfulness:
            data["faithfulness"] = [
                audit[k] for k in ("faithfulness_steps", "faithfulness_baseline",
                                   "faithfulness_fraction")
            ]  # fmt: skip
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def run_id(self) -> str:
        return self.run.id or f"cfg-{self.fingerprint()}"


# (section, key) -> the default of a key added after outputs existed (see fingerprint)
_LATER_KEYS = {
    ("model", "head"): "auto",
    ("source", "labels"): "",
    ("saliency", "gradcam_layer"): "",
    ("saliency", "threshold"): DEFAULT_THRESHOLD,
}

SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "source": SourceConfig,
    "saliency": SaliencyConfig,
    "batch": BatchConfig,
    "output": OutputConfig,
    "run": RunConfig,
    "audit": AuditConfig,
}
