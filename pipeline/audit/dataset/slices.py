"""Which slice of each ``audit.slices`` spec a record falls in (TFMA's slicing, over the
inputs' metadata columns), plain Python.

A record's columns: its own (a TFRecord input's single-valued features, store.metadata),
then the annotations sidecar's fields (they win: the sidecar is the later word), and
``folder``, the key's folder below the patterns' root ("." directly under it). A spec puts
each record in at most one slice: the one named by its values of the spec's columns, when
it has them all and they equal the spec's fixed values.
"""

from collections.abc import Mapping

from pipeline.config.audit import SliceSpec

FOLDER = "folder"


def record_columns(key: str, own: Mapping[str, str], sidecar: Mapping[str, str]) -> dict:
    """column -> value of one record (see the module docstring)."""
    columns = {FOLDER: key.rsplit("/", 1)[0] if "/" in key else "."}
    columns.update(own)
    columns.update(sidecar)
    return columns


def slice_id(spec: SliceSpec, columns: Mapping[str, str]) -> str | None:
    """``"site=B"`` / ``"site=B,camera=2"``: the record's slice of ``spec``, or None."""
    parts = []
    for column, fixed in spec:
        value = columns.get(column)
        if value is None or (fixed is not None and value != fixed):
            return None
        parts.append(f"{column}={value}")
    return ",".join(parts)


def slice_ids(specs: tuple[SliceSpec, ...], columns: Mapping[str, str]) -> list[str]:
    """The record's slice under every spec that has one for it (each id once)."""
    found = (slice_id(spec, columns) for spec in specs)
    return list(dict.fromkeys(s for s in found if s is not None))
