"""The records that flow between the Beam stages.

One frozen dataclass per stage boundary; no dicts travel between stages.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

# Ground-truth object boxes as TFDS's ``objects/bbox`` and the TF object-detection
# features hold them: (ymin, xmin, ymax, xmax), each a fraction of the ORIGINAL image's
# height or width, in [0, 1].
Boxes = tuple[tuple[float, float, float, float], ...]
# An input's metadata columns, sorted (name, text value): the single-valued features of a
# TFRecord input besides its image, label, key and boxes (audit.slices groups by them).
Metadata = tuple[tuple[str, str], ...]


def record_id(key: str, target_rank: int, target_class: int) -> str:
    """Unique per output: the key, plus the target for an image's further targets."""
    return key if target_rank == 0 else f"{key}#target={target_class}"


def key_priority(key: str) -> int:
    """A record's place in every sample's order (reservoirs, the audit's samples, the
    records given curves): the first 8 bytes of sha256(key)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:8], "big")


@dataclasses.dataclass(frozen=True)
class EncodedImage:
    """An input as read from storage: encoded bytes, or pixels for TFDS inputs."""

    key: str
    source: str
    data: bytes | None = None
    pixels: np.ndarray | None = None
    label: int = -1
    boxes: Boxes = ()  # ground-truth boxes, normalised (see Boxes)
    metadata: Metadata = ()


@dataclasses.dataclass(frozen=True)
class ImageItem:
    """A decoded image at the model's input size, ready for the model handler."""

    key: str
    source: str
    pixels: np.ndarray  # uint8 [H, W, C]
    label: int
    sha256: str  # of the encoded input (or of the pixels for TFDS inputs)
    original_height: int
    original_width: int
    boxes: Boxes = ()
    metadata: Metadata = ()


@dataclasses.dataclass(frozen=True)
class Failure:
    """An input that could not be processed, with the stage that gave up on it."""

    key: str
    source: str
    stage: str
    error: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SaliencyRecord:
    """Everything known about one (image, target class) pair after the model ran."""

    key: str
    source: str
    label: int
    sha256: str
    pixels: np.ndarray  # uint8 [H, W, C], the image the model saw (before preprocessing)
    prediction_class: int
    prediction_probability: float
    top_k_classes: tuple[int, ...]
    top_k_probabilities: tuple[float, ...]
    target_class: int
    target_rank: int  # 0 for the first target of an image, 1.. for further top-k targets
    target_score: float  # the target logit
    gradients: dict[str, np.ndarray]  # method -> float16 [H, W, C], model-input space
    run_id: str
    model_name: str
    model_fingerprint: str
    recomputed: int = 0  # maps recomputed in float32 after a non-finite reduced-precision one
    original_height: int = 0  # the input's size before resizing (0: unknown)
    original_width: int = 0
    boxes: Boxes = ()
    metadata: Metadata = ()
    prediction_name: str = ""  # model.class_names of prediction_class ("" when unnamed)
    target_name: str = ""
    # method -> {"deletion": curve, "insertion": curve}: the target logit at steps 0..S
    # (audit.faithfulness_steps), computed by the handler when the audit is on.
    faithfulness: dict[str, dict[str, tuple[float, ...]]] = dataclasses.field(default_factory=dict)
    # method -> {abs, positive, negative}: float32 [H, W] in [0, 1], computed once per record
    # (beam.transforms) for both the TFRecord and the artifacts; empty until then.
    views: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    # The model's mid-level feature map float16 [h, w, C] (engine.features), computed by the
    # handler when the audit is on, for the row line's hotspots; not written to the TFRecord.
    features: np.ndarray | None = None

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def record_id(self) -> str:
        """Unique per output: the key, plus the target for images with several targets."""
        return record_id(self.key, self.target_rank, self.target_class)
