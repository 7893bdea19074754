"""The audit's per-record work as published data: one JSON line per record holding every
method's row (audit.record.rows), its map downsampled to ``map_size``, its deletion / insertion
curves and its hotspots (audit.record.hotspots: where the map peaks and the pixels there), plus the
record's metadata columns (for slices). The job writes these lines on the workers, next to
the records and in the same shard sets (``audit_rows/``), so an audit aggregates lines
instead of re-reading and re-measuring every record; an output dir without them (or with
lines of other settings) gets them rebuilt from its records by the same function.

``settings`` names what a line depends on besides the record: the annotations sidecar's
bytes, the resize policy, ``map_size`` and this format's version. Lines of other settings
are not used. (A mask PNG the sidecar points at is not hashed: change the sidecar's path
when you change a mask.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np

from pipeline.audit.record.rows import Annotation, load_annotations, record_rows
from pipeline.config import Config
from pipeline.store.files import read_bytes

ROWS_VERSION = 2  # bump when a line's contents change


def rows_settings(*, annotations: bytes, resize_policy: str, map_size: int) -> str:
    """The 16-hex settings id stamped on every line (see the module docstring)."""
    text = json.dumps([ROWS_VERSION, hashlib.sha256(annotations).hexdigest(), resize_policy,
                       int(map_size)])  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class LineMaker:
    """What a line depends on besides its record (the annotations sidecar, the resize
    policy, the map size) and their settings id: the job and the audit's rebuild make
    their lines with the same one."""

    annotations: dict[str, Annotation]
    resize_policy: str
    map_size: int
    settings: str

    def line(self, record: Any) -> bytes:
        """The line of one records.DecodedRecord (see row_line)."""
        return row_line(record, annotation=self.annotations.get(record.key),
                        resize_policy=self.resize_policy, map_size=self.map_size,
                        settings=self.settings)  # fmt: skip


def line_maker(config: Config) -> LineMaker:
    """The LineMaker of a config: the sidecar read once, in the launcher."""
    a = config.audit
    sidecar = read_bytes(a.annotations) if a.annotations else b""
    settings = rows_settings(annotations=sidecar, resize_policy=config.source.resize,
                             map_size=a.map_size)  # fmt: skip
    return LineMaker(load_annotations(a.annotations), config.source.resize, a.map_size, settings)


def row_line(
    record: Any,
    *,
    annotation: Annotation | None,
    resize_policy: str,
    map_size: int,
    settings: str,
) -> bytes:
    """The line of one records.DecodedRecord (UTF-8 JSON, sorted keys: deterministic)."""
    per_method = record_rows(
        record, annotation=annotation, resize_policy=resize_policy, map_size=map_size
    )
    line = {
        "key": record.key,
        "record_id": record.record_id,
        "settings": settings,
        "metadata": dict(record.metadata),
        "methods": [
            {
                "row": row,
                "map": small.tolist(),
                "curves": {name: np.asarray(c, np.float64).tolist() for name, c in curves.items()},
                "hotspots": spots,
            }
            for row, small, curves, spots in per_method
        ],  # fmt: skip
    }
    return json.dumps(line, sort_keys=True).encode("utf-8")


def parse_row_line(raw: bytes) -> dict:
    """A line as written, maps and curves as float64 arrays."""
    line = json.loads(raw)
    for entry in line["methods"]:
        entry["map"] = np.asarray(entry["map"], np.float64)
        entry["curves"] = {k: np.asarray(v, np.float64) for k, v in entry["curves"].items()}
    return line


def line_settings(raw: bytes) -> str:
    """The settings id of a line."""
    return str(json.loads(raw).get("settings", ""))
