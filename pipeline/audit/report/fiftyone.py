"""An output dir as a FiftyOne dataset (``python -m pipeline export fiftyone OUT``).

One sample per committed record, with:

- the image (the model-input pixels the maps are of, written to OUT/fiftyone/images/; the
  record's source file when the record was written without its image);
- ``prediction`` (label: the class name, else its id; confidence) and, when known,
  ``ground_truth`` (the record's label, else the annotations'); the object boxes the audit
  scores against (the annotations sidecar's, else the record's, through the run's resize
  policy into the exported image's pixels: audit.record.rows.ground_truth) as ``objects``;
- per method ``<method>_map``: the map (the ``abs`` view, max over channels of |gradient|
  scaled to [0, 1]) as a heatmap PNG under OUT/fiftyone/maps/<method>/;
- with an audit (OUT/audit/): per method the row's metrics as ``<method>_<metric>``
  (``<method>_pointing``, ``<method>_gini``, ...), the SpRAy cluster as
  ``<method>_cluster``, the flags naming the record as ``<method>_flags`` and whether one
  was confirmed as ``<method>_confirmed``; a flagged sample is tagged ``<method>:<kind>``
  so the App's sidebar filters it in one click.

The dataset is persistent and replaced whole by each export, under the name given (default
``saliency-<OUT's folder name>``); open it with ``fiftyone app launch NAME``. FiftyOne (the
``fiftyone`` extra) runs its own database: FIFTYONE_DATABASE_DIR says where. The records
are read by the function given (store.records.read: the command passes it), so this module
never loads TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from pipeline.audit.record.rows import Annotation, ground_truth, true_label
from pipeline.audit.report.exports import install_line, local_dir
from pipeline.audit.report.membership import Membership, memberships
from pipeline.choices import DEFAULT_RESIZE
from pipeline.maps.render import encode_png
from pipeline.store.files import read_json, read_jsonl
from pipeline.store.layout import AUDIT_JSON, AUDIT_ROWS, MANIFEST_NAME, safe_key
from pipeline.store.manifest import has_manifest

__all__ = ["FIFTYONE_DIR", "FiftyOneExport", "export_fiftyone", "fiftyone_missing"]

FIFTYONE_DIR = "fiftyone"  # OUT/fiftyone/: the samples' images and heatmaps
MAP_VIEW = "abs"
BATCH = 256  # samples added to the database at a time
_ROW_IDENTITY = ("key", "record_id", "class", "target", "label", "method")


@dataclasses.dataclass(frozen=True)
class FiftyOneExport:
    """What was written: the dataset's name, its samples, the methods, the media folder."""

    name: str
    samples: int
    methods: tuple[str, ...]
    audited: bool
    boxed: int  # samples with object boxes
    media_dir: str


def fiftyone_missing() -> str | None:
    """None when the ``fiftyone`` extra is installed, else the line saying how."""
    try:
        import fiftyone  # noqa: F401
    except ImportError:
        return install_line("fiftyone", "the FiftyOne export")
    return None


def _local(output_dir: str) -> str:
    out = local_dir(output_dir, "FiftyOne reads its media from local files")
    if not has_manifest(out):
        raise FileNotFoundError(f"{out} has no {MANIFEST_NAME}: give the output.dir of a run.")
    return out


def _names(out: str) -> dict[int, str]:
    """class id -> name, from the manifest's predictions and targets (ids stay unnamed
    when the run had no model.class_names)."""
    names = {}
    for row in read_jsonl(os.path.join(out, MANIFEST_NAME)):
        for cid, name in ((row["prediction_class"], row.get("prediction_name")),
                          (row["target_class"], row.get("target_name"))):  # fmt: skip
            if name:
                names[int(cid)] = name
    return names


def _png(path: str, pixels: np.ndarray) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(encode_png(pixels))
    return path


@dataclasses.dataclass(frozen=True)
class _Context:
    """What every sample of one export reads besides its record."""

    out: str
    names: dict[int, str]
    rows: dict[tuple[str, str], dict]
    placed: dict[tuple[str, str], Membership]
    annotations: Mapping[str, Annotation]
    resize_policy: str


def _objects(fo, record, annotation: Annotation | None, policy: str):
    boxes, _ = ground_truth(record, annotation, policy)
    if boxes is None or not len(boxes):
        return None
    h, w = record.height, record.width
    return fo.Detections(detections=[
        fo.Detection(label="object", bounding_box=[x0 / w, y0 / h, (x1 - x0) / w, (y1 - y0) / h])
        for y0, x0, y1, x1 in np.asarray(boxes, np.float64).tolist()
    ])  # fmt: skip


def _sample(fo, record, ctx: _Context):
    """The FiftyOne sample of one record (see the module docstring)."""
    out, names, rows, placed = ctx.out, ctx.names, ctx.rows, ctx.placed
    rid = record.record_id
    stem = safe_key(rid)
    media = os.path.join(out, FIFTYONE_DIR)
    if record.image is not None:
        filepath = _png(os.path.join(media, "images", f"{stem}.png"), record.image)
    else:
        filepath = record.source
    sample = fo.Sample(filepath=os.path.abspath(filepath) if "://" not in filepath else filepath)
    sample["record_id"], sample["key"] = rid, record.key
    name = names.get(record.prediction_class, str(record.prediction_class))
    sample["prediction"] = fo.Classification(
        label=name, confidence=float(record.prediction_probability)
    )
    annotation = ctx.annotations.get(record.key)
    label = true_label(record, annotation)
    if label >= 0:
        sample["ground_truth"] = fo.Classification(label=names.get(label, str(label)))
    objects = _objects(fo, record, annotation, ctx.resize_policy)
    if objects is not None:
        sample["objects"] = objects
    for method in record.methods:
        heat = np.clip(np.round(record.maps[method][MAP_VIEW] * 255), 0, 255).astype(np.uint8)
        path = _png(os.path.join(media, "maps", method, f"{stem}.png"), heat)
        sample[f"{method}_map"] = fo.Heatmap(map_path=os.path.abspath(path), range=[0, 255])
        for metric, value in rows.get((rid, method), {}).items():
            if metric not in _ROW_IDENTITY and isinstance(value, int | float):
                sample[f"{method}_{metric}"] = float(value)
        if placed:
            member = placed.get((method, rid), Membership())
            sample[f"{method}_cluster"] = member.cluster
            sample[f"{method}_flags"] = list(member.flags)
            sample[f"{method}_confirmed"] = member.confirmed
            sample.tags.extend(f"{method}:{kind}" for kind in member.flags)
    return sample


def export_fiftyone(
    output_dir: str,
    read: Callable[[str], Iterable],
    *,
    name: str | None = None,
    annotations: Mapping[str, Annotation] | None = None,
    resize_policy: str = DEFAULT_RESIZE,
) -> FiftyOneExport:
    """Make (or replace) the persistent FiftyOne dataset ``name`` from OUT's records
    (``read``: store.records.read) and its latest audit (see the module docstring);
    ``annotations`` and ``resize_policy``: the run's audit.annotations and source.resize."""
    out = _local(output_dir)
    name = name or f"saliency-{os.path.basename(os.path.abspath(out))}"
    audited = os.path.exists(os.path.join(out, AUDIT_JSON))
    placed = memberships(read_json(os.path.join(out, AUDIT_JSON))) if audited else {}
    rows = {}
    if os.path.exists(os.path.join(out, AUDIT_ROWS)):
        rows = {(r["record_id"], r["method"]): r for r in read_jsonl(os.path.join(out, AUDIT_ROWS))}
    ctx = _Context(out, _names(out), rows, placed, annotations or {}, resize_policy)
    import fiftyone as fo

    dataset = fo.Dataset(name, persistent=True, overwrite=True)
    dataset.info = {"output_dir": os.path.abspath(out), "audited": audited}
    batch, count, boxed, methods = [], 0, 0, {}
    for record in read(out):
        batch.append(_sample(fo, record, ctx))
        boxed += batch[-1].has_field("objects")
        methods.update(dict.fromkeys(record.methods))  # in the run's order
        if len(batch) == BATCH:
            dataset.add_samples(batch, progress=False)
            count, batch = count + len(batch), []
    if batch:
        dataset.add_samples(batch, progress=False)
        count += len(batch)
    if methods:  # the App opens on the labels, the boxes and the first method's map
        shown = ["prediction", "ground_truth", "objects", f"{next(iter(methods))}_map"]
        dataset.app_config.active_fields = fo.ActiveFields(paths=shown)
    dataset.save()
    return FiftyOneExport(name, count, tuple(methods), audited, boxed,
                          os.path.join(out, FIFTYONE_DIR))  # fmt: skip
