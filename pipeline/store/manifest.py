"""The committed manifest and what it names: the one source of truth for readers.

``manifest.jsonl`` is replaced whole by publish (the commit point); each row names the
shard set holding its record. A folder can hold shards of other sets for a moment (a
publish cut short, until the next run's recovery): readers that go through
:func:`committed_shards` never see them.
"""

from __future__ import annotations

from apache_beam.io.filesystems import FileSystems

from pipeline.store.files import list_files, read_jsonl
from pipeline.store.layout import (
    MANIFEST_NAME,
    RECORD_SHARDS,
    RECORDS_DIR,
    ShardFamily,
    join_path,
)

__all__ = ["committed_sets", "committed_shards", "has_manifest", "read_manifest", "shard_files"]


def has_manifest(output_dir: str) -> bool:
    """Whether ``output_dir`` has a committed manifest (a run published there)."""
    return FileSystems.exists(join_path(output_dir, MANIFEST_NAME))


def read_manifest(output_dir: str) -> list[dict]:
    """The committed manifest rows ([] before the first successful run)."""
    path = join_path(output_dir, MANIFEST_NAME)
    if not FileSystems.exists(path):
        return []
    try:
        return read_jsonl(path)
    except ValueError as exc:
        raise ValueError(
            f"{path} is not valid JSON lines ({exc}); it is only ever replaced whole, so it "
            f"was edited by hand: restore it, or delete it together with {RECORDS_DIR}/ to "
            "start this output directory over"
        ) from exc


def shard_files(
    output_dir: str, shard_sets: set[str], family: ShardFamily = RECORD_SHARDS
) -> list[str]:
    """The shards of ``family`` (records/ by default) that belong to ``shard_sets``, sorted."""
    root = join_path(output_dir, family.directory).rstrip("/") + "/"
    return [
        path
        for path in list_files(root)
        if family.set_of(path[len(root) :] if path.startswith(root) else path) in shard_sets
    ]


def committed_sets(output_dir: str, rows: list[dict] | None = None) -> list[str]:
    """The shard sets the committed manifest (or ``rows``) names, sorted."""
    rows = read_manifest(output_dir) if rows is None else rows
    return sorted({str(row["shard_set"]) for row in rows if row.get("shard_set")})


def committed_shards(output_dir: str, rows: list[dict] | None = None) -> list[str]:
    """The record shards of the shard sets the committed manifest (or ``rows``) names,
    sorted; shards of any other set in records/ are left out."""
    return shard_files(output_dir, set(committed_sets(output_dir, rows)))
