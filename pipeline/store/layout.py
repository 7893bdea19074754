"""Every name under output.dir, in one place.

Output layout under ``output_dir`` (what readers see)::

    records/saliency-<set>-SSSSS-of-NNNNN.tfrecord   the shards of committed shard sets
    audit_rows/rows-<set>-SSSSS-of-NNNNN.tfrecord    their audit rows (audit.enabled), one
                                                     JSON line per record, same shard sets
    artifacts/<safe_key(key)>/<method>_<view>[_t<class>].png   beam.sinks.WriteArtifacts
    manifest.jsonl       one row per record, sorted by record_id: the commit point
    failures.jsonl       the inputs of the last run that failed, sorted by key (may be empty)
    summary.json         the last run's counts
    audit/, audits/<timestamp>/   the audit layer's outputs (reserved)
    .staging/<set>/      one run attempt's unpublished outputs (hidden; removed):
        records/, audit_rows/, manifest.jsonl, failures.jsonl, counts.json, done.txt, tmp/
    .lock                held by the running run (local directories only)
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import string

from apache_beam.io.filesystems import FileSystems

from pipeline.elements import SaliencyRecord

RECORDS_SUFFIX = ".tfrecord"


@dataclasses.dataclass(frozen=True)
class ShardFamily:
    """Sharded files published per shard set: ``<directory>/<stem>-<set>-SSSSS-of-NNNNN``
    + RECORDS_SUFFIX once committed, ``<stem>-SSSSS-of-NNNNN`` + suffix while staged."""

    directory: str
    stem: str

    @property
    def prefix(self) -> str:
        """Where Beam's sink writes (relative to the output or staging dir)."""
        return f"{self.directory}/{self.stem}"

    def name(self, shard_set: str, n: str) -> str:
        return f"{self.stem}-{shard_set}-{n}{RECORDS_SUFFIX}"

    def set_of(self, name: str) -> str | None:
        """The shard set of a committed shard's file name, None for any other name."""
        m = re.match(rf"^{self.stem}-(?P<set>[A-Za-z0-9]+)-\d{{5}}-of-\d{{5}}\.tfrecord$", name)
        return m["set"] if m else None

    def position(self, name: str) -> tuple[int, int] | None:
        """(SSSSS, NNNNN) of a committed shard's file name, None for any other name."""
        m = re.match(rf"^{self.stem}-[A-Za-z0-9]+-(\d{{5}})-of-(\d{{5}})\.tfrecord$", name)
        return (int(m[1]), int(m[2])) if m else None

    def staged(self, name: str) -> str | None:
        """The SSSSS-of-NNNNN of a staged (or pre-1.0 unnamed) shard, else None."""
        m = re.match(rf"^{self.stem}-(?P<n>\d{{5}}-of-\d{{5}})\.tfrecord$", name)
        return m["n"] if m else None


RECORD_SHARDS = ShardFamily("records", "saliency")  # the saliency records
ROW_SHARDS = ShardFamily("audit_rows", "rows")  # their audit rows (audit.record.lines)
SHARD_FAMILIES = (RECORD_SHARDS, ROW_SHARDS)
RECORDS_DIR = RECORD_SHARDS.directory
RECORDS_PREFIX = RECORD_SHARDS.prefix
MANIFEST_NAME = "manifest.jsonl"
FAILURES_NAME = "failures.jsonl"
SUMMARY_NAME = "summary.json"
STAGING_DIR = ".staging"
LOCK_NAME = ".lock"
ARTIFACTS_DIR = "artifacts"
COUNTS_NAME = "counts.json"  # in a staging directory: the attempt's counts
DONE_INDEX_NAME = "done.txt"  # in a staging directory: the incremental done index
TMP_DIR = "tmp"  # in a staging directory: local temporary files of artifact writes
AUDIT_DIR = "audit"  # the latest audit (the audit layer)
AUDITS_DIR = "audits"  # audits/<timestamp>/: the audit history
AUDIT_JSON = f"{AUDIT_DIR}/audit.json"
AUDIT_ROWS = f"{AUDIT_DIR}/rows.jsonl"
AUDIT_REPORT = f"{AUDIT_DIR}/report.html"
AUDIT_DRIFT_JSON = f"{AUDIT_DIR}/drift.json"
AUDIT_MAPS = f"{AUDIT_DIR}/maps"
AUDITS_LATEST = f"{AUDITS_DIR}/latest"  # a text file: the newest entry's name (no symlinks)


def audit_entry(stamp: str) -> str:
    """audits/<stamp>: one archived audit (a copy of audit/)."""
    return f"{AUDITS_DIR}/{stamp}"


def index_page(page: int) -> str:
    """The run's contact sheet, page ``page`` (1-based): index.html, index-2.html, ..."""
    return "index.html" if page == 1 else f"index-{page}.html"


TEMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{32}$")


_SAFE_CHARS = frozenset(string.ascii_letters + string.digits + "._-")
_SPECIAL_SEGMENTS = {"": "_", ".": "%2E", "..": "%2E%2E"}
_MAX_SEGMENT = 150  # characters; file systems refuse names over 255 bytes
_HASH_CHARS = 16


def join_path(output_dir: str, relative: str) -> str:
    """``output_dir`` joined with a '/'-separated relative path (any Beam filesystem)."""
    return FileSystems.join(output_dir, *relative.split("/"))


def staging_dir(output_dir: str, shard_set: str) -> str:
    """Where the attempt ``shard_set`` writes before :func:`publish`."""
    return join_path(output_dir, f"{STAGING_DIR}/{shard_set}")


def counts_path(staging: str) -> str:
    """The attempt's counts file in its staging directory."""
    return join_path(staging, COUNTS_NAME)


def done_index_path(staging: str) -> str:
    """The incremental done index in an attempt's staging directory."""
    return join_path(staging, DONE_INDEX_NAME)


def tmp_dir(staging: str) -> str:
    """Where an attempt's local temporary files go (removed with the staging directory)."""
    return join_path(staging, TMP_DIR)


def shard_set_of(name: str) -> str | None:
    """The shard set of a published record shard's file name, None for any other name."""
    return RECORD_SHARDS.set_of(name)


def safe_key(key: str) -> str:
    """A relative path for ``key`` that stays inside its parent and is unique per key.

    Each '/'-separated segment keeps [A-Za-z0-9._-] and percent-encodes every other
    character (UTF-8 bytes, '%' and '\\\\' and NUL included); '.', '..' and empty segments
    are replaced and over-long segments cut. If any of this changed the key, '~' and the
    first 16 hex digits of the key's sha256 are appended: an unchanged key never contains
    '%' or '~', and changed keys differ by their hash, so two keys never share a path.
    """
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}: {key!r}.")
    segments = []
    changed = False
    for segment in key.split("/"):
        if segment in _SPECIAL_SEGMENTS:
            encoded = _SPECIAL_SEGMENTS[segment]
        else:
            encoded = "".join(
                ch
                if ch in _SAFE_CHARS
                else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
                for ch in segment
            )
        encoded = encoded[:_MAX_SEGMENT]
        changed = changed or encoded != segment
        segments.append(encoded)
    path = "/".join(segments)
    if changed:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        path = f"{path}~{digest[:_HASH_CHARS]}"
    return path


def artifact_path(record: SaliencyRecord, method: str, view: str) -> str:
    """Artifact path relative to output_dir: artifacts/<safe_key>/<method>_<view>[_t<c>].png."""
    suffix = f"_t{record.target_class}" if record.target_rank > 0 else ""
    return f"{ARTIFACTS_DIR}/{safe_key(record.key)}/{method}_{view}{suffix}.png"


def _file_id(group: str, group_id: int | str) -> str:
    if group != "slice":
        return str(group_id)
    # "site=B,camera=2": letters, digits, . _ - and a hash, so the name is the same in a
    # URL (no % escapes a browser would decode) and unique
    text = str(group_id)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', text)[:80]}-{digest}"


def audit_confirm_path(method: str, group: str, group_id: int | str, index: int, view: str) -> str:
    """Relative path of a flag's confirmation example PNG (``view``: member_before,
    member_after, recipient_before, recipient_after): flag ``index`` of the group."""
    name = f"confirm_{group}_{_file_id(group, group_id)}_{int(index)}_{view}.png"
    return f"{AUDIT_DIR}/maps/{method}/{name}"


def audit_map_path(
    method: str, class_id: int | str, cluster: int | None = None, *, group: str = "class"
) -> str:
    """Relative path of a group's mean map (cluster None) or a cluster prototype PNG;
    ``group`` "class" (explained), "label" (true), "error" (class_id "<label>-<pred>") or
    "slice" (class_id "<column>=<value>[,...]", made safe for a file name)."""
    name = "mean" if cluster is None else f"cluster_{cluster}"
    return f"{AUDIT_DIR}/maps/{method}/{group}_{_file_id(group, class_id)}_{name}.png"
