"""One audit row per (record, method): the per-record metrics, plain numpy.

A row holds the record's key, predicted class, label, method and every metric of its
relevance map (concentration, spatial; localisation when the image has boxes or a mask;
the deletion / insertion AUCs when the record carries the curves), plus the map
downsampled to ``map_size`` for the per-class aggregates and strategy discovery.

Ground truth comes from a JSONL sidecar (``audit.annotations``, one row per image: boxes
in the original image's pixels, an optional object mask PNG of the original's size, an
optional label), else from the record itself (boxes read from TFRecord / TFDS inputs,
normalised). Boxes and masks go through the run's resize policy into model-input pixels.
"""

import dataclasses
import json

import numpy as np

from pipeline.audit.metrics.concentration import entropy, gini
from pipeline.audit.metrics.faithfulness import auc
from pipeline.audit.metrics.localisation import (
    box_mask,
    from_normalised,
    localisation_metrics,
    map_boxes,
)
from pipeline.audit.metrics.relevance import downsample, relevance
from pipeline.audit.metrics.spatial import spatial_metrics
from pipeline.audit.metrics.weak_box import scene_for, weak_box_metrics
from pipeline.audit.record.hotspots import hotspots
from pipeline.choices import DEFAULT_MAX_PIXELS
from pipeline.store.decode import decode_image
from pipeline.store.files import read_bytes, read_text
from pipeline.store.layout import join_path
from pipeline.store.resize import resize


@dataclasses.dataclass(frozen=True)
class Annotation:
    """An image's ground truth: boxes in its ORIGINAL pixels, and its label (-1: none)."""

    boxes: tuple[tuple[float, float, float, float], ...] = ()
    label: int = -1
    mask: str = ""  # a PNG of the original image's size: nonzero = object
    # the row's other scalar fields, as text: columns for audit.slices
    columns: tuple[tuple[str, str], ...] = ()


def parse_annotations(
    text: str, source: str = "annotations", *, base: str = ""
) -> dict[str, Annotation]:
    """``{key: Annotation}`` from JSONL; an error names the line, the value and the fix."""
    found: dict[str, Annotation] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source} line {number}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{where}: not JSON ({exc}).") from exc
        if not isinstance(row, dict) or not isinstance(row.get("key"), str):
            raise ValueError(
                f'{where}: got {line[:80]!r}; {{"key": "<image key>", ...}} is required.'
            )
        boxes = row.get("boxes", [])
        ok = isinstance(boxes, list) and all(
            isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b)
            and b[0] <= b[2] and b[1] <= b[3]
            for b in boxes
        )  # fmt: skip
        if not ok:
            raise ValueError(
                f"{where}: boxes {boxes!r}; a list of [ymin, xmin, ymax, xmax] in the original "
                "image's pixels (ymin <= ymax, xmin <= xmax) is required."
            )
        label = row.get("label", -1)
        if isinstance(label, bool) or not isinstance(label, int):
            raise ValueError(f"{where}: label {label!r}; an integer class index is required.")
        mask = row.get("mask", "")
        if not isinstance(mask, str):
            raise ValueError(f"{where}: mask {mask!r}; the path of a PNG is required.")
        if mask and not looks_absolute(mask):
            mask = join_path(base, mask) if base else mask
        if row["key"] in found:
            raise ValueError(f"{where}: key {row['key']!r} appears twice.")
        columns = tuple(sorted(
            (k, v if isinstance(v, str) else json.dumps(v)) for k, v in row.items()
            if k not in ("key", "boxes", "mask") and isinstance(v, (str, int, float, bool))
        ))  # fmt: skip
        found[row["key"]] = Annotation(
            tuple(tuple(float(v) for v in b) for b in boxes), label, mask, columns
        )
    return found


def load_annotations(path: str) -> dict[str, Annotation]:
    """The sidecar at ``path`` (any Beam filesystem); {} for an empty path. Mask paths
    are relative to the sidecar's folder unless absolute or a URL."""
    if not path:
        return {}
    return parse_annotations(
        read_text(path), path, base=path.rsplit("/", 1)[0] if "/" in path else ""
    )


def looks_absolute(path: str) -> bool:
    return path.startswith("/") or "://" in path


def load_mask(path: str, original: tuple[int, int], size: tuple[int, int], policy: str):
    """bool [H, W] in model-input pixels: the mask PNG (nonzero = object, the original
    image's size) through the resize policy; an error names the file and what is wrong."""
    pixels = decode_image(read_bytes(path), channels=1, max_pixels=DEFAULT_MAX_PIXELS)
    if original[0] > 0 and pixels.shape[:2] != tuple(original):
        raise ValueError(
            f"mask {path}: {pixels.shape[1]} x {pixels.shape[0]} pixels, but its image is "
            f"{original[1]} x {original[0]}; the mask must have the original image's size."
        )
    binary = np.where(pixels > 0, 255, 0).astype(np.uint8)
    return resize(binary, size, policy)[..., 0] >= 128


def ground_truth(record, annotation, policy: str):
    """(boxes in model-input pixels [N, 4] or None, mask bool [H, W] or None)."""
    size, original = (record.height, record.width), (record.original_height, record.original_width)
    boxes = None
    if annotation is not None and annotation.boxes and original[0] > 0:
        boxes = map_boxes(annotation.boxes, original, size, policy)
    elif record.boxes and original[0] > 0:
        boxes = map_boxes(from_normalised(record.boxes, original), original, size, policy)
    if annotation is not None and annotation.mask:
        return boxes, load_mask(annotation.mask, original, size, policy)
    return boxes, None if boxes is None else box_mask(boxes, size)


def true_label(record, annotation: Annotation | None) -> int:
    """The record's label, else the annotation's (-1: none known)."""
    label = int(record.label)
    return annotation.label if label < 0 and annotation is not None else label


def target_probability(record) -> float:
    """The probability of the class a record explains (its entry in the ranked list, which
    holds every explained class), else the top probability (records written before)."""
    ranked = [int(c) for c in record.top_k_classes]
    if int(record.target_class) in ranked:
        return float(record.top_k_probabilities[ranked.index(int(record.target_class))])
    return float(record.prediction_probability)


def record_rows(
    record, *, annotation: Annotation | None, resize_policy: str, map_size: int
) -> list[tuple[dict, np.ndarray, dict, dict]]:
    """[(row, small map, curves, hotspots)] for each method of a store.records.DecodedRecord
    (curves: {"deletion", "insertion"} arrays, or {} when the record has none; hotspots:
    audit.record.hotspots.hotspots of the map and the image)."""
    label = true_label(record, annotation)
    boxes, mask = ground_truth(record, annotation, resize_policy)
    boxed = boxes is not None and len(boxes) and record.image is not None
    scene = scene_for(record.image) if boxed else None  # the image's part, once per record
    out = []
    for method in record.methods:
        m = relevance(record.gradients[method])
        row = {
            "key": record.key,
            "record_id": record.record_id,
            "class": int(record.prediction_class),
            "target": int(record.target_class),
            "label": label,
            "method": method,
            "confidence": target_probability(record),
            "gini": gini(m),
            "entropy": entropy(m),
            **spatial_metrics(m),
        }
        if mask is not None:
            row.update(localisation_metrics(m, mask))
        if boxed:
            row.update(weak_box_metrics(m, record.image, boxes, scene=scene))
        curves = record.faithfulness.get(method, {})
        if curves:
            row["deletion_auc"] = float(auc(curves["deletion"]))
            row["insertion_auc"] = float(auc(curves["insertion"]))
        spots = hotspots(m, record.image, record.features)
        out.append((row, downsample(m, map_size), curves, spots))
    return out
