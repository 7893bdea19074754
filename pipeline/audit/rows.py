"""One audit row per (record, method): the per-record metrics, plain numpy.

A row holds the record's key, predicted class, label, method and every metric of its
relevance map (concentration, spatial; localisation when the image has boxes), plus the
map downsampled to ``map_size`` for the per-class aggregates and strategy discovery.
Annotations come from a JSONL sidecar (``audit.annotations``), one row per image.
"""

import dataclasses
import json

import numpy as np

from pipeline.audit.metrics.concentration import entropy, gini
from pipeline.audit.metrics.localisation import box_mask, localisation_metrics, map_boxes
from pipeline.audit.metrics.relevance import relevance
from pipeline.audit.metrics.spatial import spatial_metrics
from pipeline.audit.strategies import downsample
from pipeline.store.files import read_text


@dataclasses.dataclass(frozen=True)
class Annotation:
    """An image's ground truth: boxes in its ORIGINAL pixels, and its label (-1: none)."""

    boxes: tuple[tuple[float, float, float, float], ...] = ()
    label: int = -1


def parse_annotations(text: str, source: str = "annotations") -> dict[str, Annotation]:
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
        if row["key"] in found:
            raise ValueError(f"{where}: key {row['key']!r} appears twice.")
        found[row["key"]] = Annotation(tuple(tuple(float(v) for v in b) for b in boxes), label)
    return found


def load_annotations(path: str) -> dict[str, Annotation]:
    """The sidecar at ``path`` (any Beam filesystem); {} for an empty path."""
    return parse_annotations(read_text(path), path) if path else {}


def record_rows(
    record, *, annotation: Annotation | None, resize_policy: str, map_size: int
) -> list[tuple[dict, np.ndarray]]:
    """[(row, small map)] for each method of a store.records.DecodedRecord."""
    label = int(record.label)
    if label < 0 and annotation is not None:
        label = annotation.label
    mask = None
    if annotation is not None and annotation.boxes and record.original_height > 0:
        boxes = map_boxes(
            annotation.boxes,
            (record.original_height, record.original_width),
            (record.height, record.width),
            resize_policy,
        )
        mask = box_mask(boxes, (record.height, record.width))
    out = []
    for method in record.methods:
        m = relevance(record.gradients[method])
        row = {
            "key": record.key,
            "record_id": record.record_id,
            "class": int(record.prediction_class),
            "label": label,
            "method": method,
            "confidence": float(record.prediction_probability),
            "gini": gini(m),
            "entropy": entropy(m),
            **spatial_metrics(m),
        }
        if mask is not None:
            row.update(localisation_metrics(m, mask))
        out.append((row, downsample(m, map_size)))
    return out
