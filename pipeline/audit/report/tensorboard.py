"""The audits of an output dir as TensorBoard data, under OUT/tensorboard/:

- scalars, one step per archived audit (audits/<UTC time>/, in time order, each at its own
  wall time), so a schedule's history is a chart: per method the localisation and
  faithfulness means, per class and method the metric means, per class the count,
  accuracy and flags (candidates and confirmed), per method the sanity statistics at the
  last randomised layer;
- images of the newest audit: per class and method the mean map and each cluster's
  prototype;
- the Embedding Projector, for the newest audit: per class and method (and per method over
  every class) the members' SpRAy spectral coordinates (the row-normalised first
  eigenvectors of the kNN graph the clusters come from), a sprite of each member's overlay
  thumbnail, and metadata columns (key, class, label, cluster, flag, confirmed, pointing,
  energy in box) to colour by and click through.

Written with TensorBoard's own event writer and projector protos (the ``tensorboard``
extra, imported only when an export runs: ``tensorboard_missing`` says what to install);
nothing here imports TensorFlow. ``python -m pipeline tensorboard OUT`` writes it;
once it exists, every audit of OUT rewrites it.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
import shutil
import time

import numpy as np
from PIL import Image

from pipeline.audit.dataset.spectral import laplacian_eigen
from pipeline.audit.dataset.strategies import describe
from pipeline.audit.metrics.relevance import downsample
from pipeline.audit.record.lines import parse_row_line
from pipeline.audit.report.exports import install_line, local_dir
from pipeline.audit.report.membership import Membership, memberships
from pipeline.store.files import read_bytes, read_json, read_jsonl
from pipeline.store.layout import AUDIT_DIR, AUDITS_DIR, MANIFEST_NAME, ROW_SHARDS, join_path
from pipeline.store.manifest import committed_sets, shard_files
from pipeline.store.records import read_raw

__all__ = ["TENSORBOARD_DIR", "TensorBoardExport", "export_tensorboard", "tensorboard_missing"]

TENSORBOARD_DIR = "tensorboard"
THUMB = 48  # sprite cell side, pixels
MIN_POINTS = 3  # an embedding of fewer members says nothing
DIMENSIONS = 8  # spectral coordinates per member (at most)
_ENTRY = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")
_LOCALISATION = ("pointing", "energy_in_box", "rank_accuracy", "box_iou", "box_correct")
_COLUMNS = ("key", "class", "label", "cluster", "flag", "confirmed", "pointing",
            "energy_in_box")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TensorBoardExport:
    """What was written: the logdir, its scalar steps, images and embeddings."""

    logdir: str
    steps: int
    scalars: int
    images: int
    embeddings: dict[str, int]  # embedding name -> points


def tensorboard_missing() -> str | None:
    """None when the ``tensorboard`` extra is installed, else the line saying how."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return install_line("tensorboard", "the TensorBoard export")
    return None


def _entries(out: str) -> list[str]:
    root = os.path.join(out, AUDITS_DIR)
    names = sorted(n for n in os.listdir(root) if _ENTRY.match(n)) if os.path.isdir(root) else []
    return [n for n in names if os.path.exists(os.path.join(root, n, "audit.json"))]


def _wall_time(name: str) -> float:
    return float(time.mktime(time.strptime(name[:16], "%Y%m%dT%H%M%SZ")) - time.timezone)


def _number(value) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def scalars(audit: dict) -> dict[str, float]:
    """tag -> value of one audit.json (the tags TensorBoard charts over the audits)."""
    out: dict[str, float] = {}
    for method, m in audit["methods"].items():
        for name in _LOCALISATION:
            out[f"{method}/localisation/{name}"] = _number((m.get("localisation") or {}).get(name))
        for name in ("deletion_auc", "insertion_auc"):
            out[f"{method}/faithfulness/{name}"] = _number((m.get("faithfulness") or {}).get(name))
        for stat, values in ((m.get("sanity") or {}).get("statistics") or {}).items():
            out[f"{method}/sanity/{stat}"] = _number(values[-1]) if values else None
    for cid, c in audit["classes"].items():
        out[f"class_{cid}/count"] = _number(c["count"])
        out[f"class_{cid}/accuracy"] = _number(c.get("accuracy"))
        out[f"class_{cid}/flags"] = float(len(c["flags"]))
        confirmed = [f for f in c["flags"] if (f.get("confirmation") or {}).get("confirmed")]
        out[f"class_{cid}/flags_confirmed"] = float(len(confirmed))
        for method, m in c["methods"].items():
            for name, value in m["metrics"].items():
                out[f"class_{cid}/{method}/{name}"] = _number(value)
    out["flags/total"] = sum(v for k, v in out.items() if k.endswith("/flags") and v)
    return {k: v for k, v in out.items() if v is not None}


def _image_value(tag: str, png: bytes):
    from tensorboard.compat.proto import summary_pb2

    with Image.open(io.BytesIO(png)) as img:
        width, height, bands = img.width, img.height, len(img.getbands())
    image = summary_pb2.Summary.Image(height=height, width=width, colorspace=bands,
                                      encoded_image_string=png)  # fmt: skip
    return summary_pb2.Summary.Value(tag=tag, image=image)


def _images(out: str, entry: str, audit: dict) -> list:
    """The newest audit's mean maps and cluster prototypes, from its archived PNGs."""

    def png(relative: str | None) -> bytes | None:
        if not relative:
            return None
        path = os.path.join(out, AUDITS_DIR, entry, relative.split(f"{AUDIT_DIR}/", 1)[-1])
        return read_bytes(path) if os.path.exists(path) else None

    values = []
    for cid, c in audit["classes"].items():
        for method, m in c["methods"].items():
            if (data := png(m.get("mean_map"))) is not None:
                values.append(_image_value(f"class_{cid}/{method}/mean_map", data))
        for cluster in c["clusters"]:
            if (data := png(cluster.get("prototype"))) is not None:
                tag = f"class_{cid}/{cluster['method']}/cluster_{cluster['cluster']}"
                values.append(_image_value(tag, data))
    return values


def _write_events(logdir: str, out: str, entries: list[str]) -> tuple[int, int]:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(logdir)
    count = 0
    for step, name in enumerate(entries):
        audit = read_json(os.path.join(out, AUDITS_DIR, name, "audit.json"))
        values = [summary_pb2.Summary.Value(tag=t, simple_value=v)
                  for t, v in sorted(scalars(audit).items())]  # fmt: skip
        count = max(count, len(values))
        writer.add_event(event_pb2.Event(wall_time=_wall_time(name), step=step,
                                         summary=summary_pb2.Summary(value=values)))  # fmt: skip
    images = _images(out, entries[-1], read_json(os.path.join(out, AUDITS_DIR, entries[-1],
                                                               "audit.json")))  # fmt: skip
    if images:
        writer.add_event(event_pb2.Event(wall_time=_wall_time(entries[-1]),
                                         step=len(entries) - 1,
                                         summary=summary_pb2.Summary(value=images)))  # fmt: skip
    writer.close()
    return count, len(images)


def _lines(out: str) -> dict[str, dict]:
    """key -> its row line (maps per method), from the committed row-line shards."""
    sets = set(committed_sets(out))
    lines = {}
    for path in shard_files(out, sets, ROW_SHARDS):
        for raw in read_raw(path):
            line = parse_row_line(raw)
            lines[line["record_id"]] = line
    return lines


def _thumbnail(out: str, artifact: str | None) -> Image.Image:
    path = os.path.join(out, artifact) if artifact else ""
    if path and os.path.exists(path):
        with Image.open(path) as img:
            return img.convert("RGB").resize((THUMB, THUMB), Image.Resampling.BILINEAR)
    return Image.new("RGB", (THUMB, THUMB), (128, 128, 128))


def _sprite(thumbs: list[Image.Image]) -> Image.Image:
    side = math.ceil(math.sqrt(len(thumbs)))
    sheet = Image.new("RGB", (side * THUMB, side * THUMB), (255, 255, 255))
    for i, thumb in enumerate(thumbs):
        sheet.paste(thumb, ((i % side) * THUMB, (i // side) * THUMB))
    return sheet


def _coordinates(maps: np.ndarray) -> np.ndarray:
    """SpRAy's spectral coordinates of downsampled maps [n, s, s]: float32 [n, d]."""
    n = len(maps)
    count = min(DIMENSIONS, n)
    _, vectors = laplacian_eigen(describe(maps), min(10, n - 1), count)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _embeddings(out: str, logdir: str, entry: str, audit: dict) -> dict[str, int]:
    """The projector's files and config for the newest audit; name -> points."""
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2

    rows = read_jsonl(os.path.join(out, AUDITS_DIR, entry, "rows.jsonl"))
    manifest = {r["record_id"]: r for r in read_jsonl(os.path.join(out, MANIFEST_NAME))}
    lines = _lines(out)
    placed = memberships(audit)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row["record_id"] in lines:
            groups.setdefault(f"{row['method']}/all", []).append(row)
            groups.setdefault(f"{row['method']}/class_{row['class']}", []).append(row)
    config = projector_config_pb2.ProjectorConfig()
    folder = os.path.join(logdir, "projector")
    os.makedirs(folder, exist_ok=True)
    found = {}
    for name, members in sorted(groups.items()):
        if len(members) < MIN_POINTS:
            continue
        method = members[0]["method"]
        maps = []
        for row in members:
            entry_maps = {m["row"]["method"]: m["map"] for m in lines[row["record_id"]]["methods"]}
            maps.append(downsample(entry_maps[method]))
        vectors = _coordinates(np.stack(maps))
        stem = name.replace("/", "_")
        np.savetxt(os.path.join(folder, f"{stem}.tsv"), vectors, delimiter="\t", fmt="%.6g")
        table = ["\t".join(_COLUMNS)]
        thumbs = []
        for row in members:
            rid = row["record_id"]
            member = placed.get((method, rid), Membership())
            cells = [rid, row["class"], row.get("label", -1), member.cluster,
                     "+".join(member.flags) or "-", "yes" if member.confirmed else "no",
                     row.get("pointing", ""), row.get("energy_in_box", "")]  # fmt: skip
            table.append("\t".join(str(c).replace("\t", " ") for c in cells))
            artifacts = (manifest.get(rid) or {}).get("artifacts", {}).get(method, {})
            thumbs.append(_thumbnail(out, artifacts.get("overlay")))
        with open(os.path.join(folder, f"{stem}_meta.tsv"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(table) + "\n")
        _sprite(thumbs).save(os.path.join(folder, f"{stem}_sprite.png"))
        embedding = config.embeddings.add()
        embedding.tensor_name = name
        embedding.tensor_path = f"projector/{stem}.tsv"
        embedding.tensor_shape.extend(vectors.shape)
        embedding.metadata_path = f"projector/{stem}_meta.tsv"
        embedding.sprite.image_path = f"projector/{stem}_sprite.png"
        embedding.sprite.single_image_dim.extend([THUMB, THUMB])
        found[name] = len(members)
    with open(os.path.join(logdir, "projector_config.pbtxt"), "w", encoding="utf-8") as handle:
        handle.write(text_format.MessageToString(config))
    return found


def export_tensorboard(output_dir: str) -> TensorBoardExport:
    """Write OUT/tensorboard/ from OUT's archived audits (see the module docstring); the
    directory is rewritten whole, so it always holds one step per archived audit."""
    out = local_dir(output_dir, "the TensorBoard export writes a local logdir")
    entries = _entries(out)
    if not entries:
        raise FileNotFoundError(
            f"{out} has no archived audit ({AUDITS_DIR}/<time>/audit.json): run "
            "`python -m pipeline audit` (or a run with audit.enabled: true) first."
        )
    logdir = join_path(out, TENSORBOARD_DIR)
    shutil.rmtree(logdir, ignore_errors=True)
    os.makedirs(logdir)
    count, images = _write_events(logdir, out, entries)
    latest = read_json(os.path.join(out, AUDITS_DIR, entries[-1], "audit.json"))
    embeddings = _embeddings(out, logdir, entries[-1], latest)
    return TensorBoardExport(logdir, len(entries), count, images, embeddings)
