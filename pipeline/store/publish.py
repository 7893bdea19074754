"""The output directory and its crash-safe protocol: layout, atomic files, staging,
publish, recovery and the run lock. No Beam transforms here (:mod:`pipeline.beam.sinks` has them).

Every file goes through ``apache_beam.io.filesystems.FileSystems`` (or ``os`` for local
paths), so local paths and object stores (gs://, s3://) behave the same.

(The names are in :mod:`pipeline.store.layout`.)

``run`` points WriteRecords, WriteManifest and WriteFailures at ``.staging/<set>/``, and
:func:`publish` moves the result into place once the pipeline succeeded: shards are renamed
into ``records/`` first, then ``manifest.jsonl`` is replaced (the commit), then shards that
no manifest row references are deleted. :func:`recover_output`, run before every run,
removes what a killed run left (staging directories, uncommitted shards, temp files), so a
crash at any moment followed by a rerun ends with each record exactly once.
:func:`output_lock` keeps a second run out of an output directory (flock locally, a lock
object with a lease on gs:// and s3://).

Single files are written whole (:func:`write_atomic`): locally to a temporary name (hidden,
in the same directory or in the staging directory) and renamed; on object stores directly
(an object becomes visible only when its upload completes). A reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator, Sequence

import tensorflow as tf
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil  # the format Beam's sink writes
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.store import object_lock, records
from pipeline.store.files import (
    delete_files,
    delete_tree,
    fsync_dir,
    fsync_file,
    is_local,
    list_files,
    read_bytes,
    read_jsonl,
    rename,
    sync_filesystem,
    write_atomic,
    write_sorted_jsonl,
)
from pipeline.store.layout import (
    FAILURES_NAME,
    LOCK_NAME,
    MANIFEST_NAME,
    RECORD_SHARDS,
    ROW_SHARDS,
    SHARD_FAMILIES,
    STAGING_DIR,
    TEMP_NAME,
    ShardFamily,
    join_path,
    staging_dir,
)
from pipeline.store.manifest import read_manifest, shard_files
from pipeline.store.object_lock import LockBusy, LockLost, ObjectLock

_LOG = logging.getLogger(__name__)


def manifest_sort_key(row: dict) -> tuple:
    """Manifest rows are sorted by record_id (one row per record)."""
    return (str(row["record_id"]),)


class OutputBusyError(RuntimeError):
    """Another run holds the output directory."""


def new_shard_set() -> str:
    """A fresh id for one run attempt's records: UTC time (sortable) + 8 random hex."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + uuid.uuid4().hex[:8]


class _Held:
    """What output_lock yields: ``verify()`` raises OutputBusyError once the lock is lost."""

    def __init__(self, lock: ObjectLock | None = None) -> None:
        self._lock = lock

    def verify(self) -> None:
        if self._lock is not None:
            try:
                self._lock.verify()
            except LockLost as exc:
                raise OutputBusyError(f"output.dir: {exc}; nothing was published") from exc


@contextlib.contextmanager
def output_lock(
    output_dir: str, *, ttl_s: float = 120, options: PipelineOptions | None = None
) -> Iterator[_Held]:
    """Hold ``output_dir`` for one run. A local directory is locked with flock (released
    when the process ends, even by SIGKILL); gs:// and s3:// with a lock object under a
    lease of ``ttl_s`` seconds (store.object_lock). Other schemes are not locked (one run
    per output dir is then the scheduler's job; a warning says so)."""
    if not is_local(output_dir):
        if not object_lock.supported(output_dir):
            _LOG.warning("output.dir %s is not locked: one run at a time is up to you", output_dir)
            yield _Held()
            return
        lock = ObjectLock(join_path(output_dir, LOCK_NAME), ttl_s=ttl_s,
                          options=options or PipelineOptions([]))  # fmt: skip
        try:
            lock.acquire()
        except LockBusy as exc:
            raise OutputBusyError(
                f"output.dir {output_dir!r} is in use by another run: {exc}"
            ) from exc
        with lock.held():
            yield _Held(lock)
        return
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, LOCK_NAME), "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise OutputBusyError(
                f"output.dir {output_dir!r} is in use by another run (lock {LOCK_NAME} held); "
                "wait for it to finish or choose another output.dir"
            ) from exc
        try:
            yield _Held()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stale_record_files(output_dir: str, referenced: set[str]) -> list[str]:
    """Files in records/ and audit_rows/ that no committed row needs: shards of other sets,
    shards of the old unnamed layout, Beam temp files, our temp files. Other names are left
    alone."""
    stale = []
    for family in SHARD_FAMILIES:
        root = join_path(output_dir, family.directory).rstrip("/") + "/"
        for path in list_files(root):
            rel = path[len(root) :] if path.startswith(root) else os.path.basename(path)
            name = rel.rsplit("/", 1)[-1]
            shard_set = family.set_of(rel)
            if shard_set is not None:
                if shard_set not in referenced:
                    stale.append(path)
            elif family.staged(rel) or rel.startswith("beam-temp-") or TEMP_NAME.match(name):
                stale.append(path)
    return stale


def recover_output(output_dir: str) -> int:
    """Remove what interrupted runs left in ``output_dir``; returns the files removed.

    Staging directories (unpublished shards, Beam temp files, temp PNGs), shards that the
    committed manifest does not reference (a publish cut short) and temp files of
    interrupted writes. Committed outputs are not touched. Run it holding output_lock.
    """
    removed = delete_tree(join_path(output_dir, STAGING_DIR))
    referenced = {str(row.get("shard_set")) for row in read_manifest(output_dir)}
    removed += delete_files(_stale_record_files(output_dir, referenced))
    if is_local(output_dir) and os.path.isdir(output_dir):
        temps = [n for n in os.listdir(output_dir) if TEMP_NAME.match(n)]
        removed += delete_files(os.path.join(output_dir, n) for n in temps)
    return removed


@dataclasses.dataclass(frozen=True)
class Published:
    """What :func:`publish` did."""

    records_total: int  # manifest rows after publishing (earlier runs' included)
    shards: int  # shards of this attempt moved into records/
    superseded: int  # earlier rows replaced by this attempt's rows for the same key


def _record_key(raw: bytes) -> str:
    feature = tf.train.Example.FromString(raw).features.feature["image/key"]
    return feature.bytes_list.value[0].decode("utf-8")


def _row_key(raw: bytes) -> str:
    return json.loads(raw)["key"]


_KEY_OF = {RECORD_SHARDS.stem: _record_key, ROW_SHARDS.stem: _row_key}  # stem -> key reader


def _compact_family(
    output_dir: str, staging: str, family: ShardFamily, shard_set: str, new_set: str,
    drop_keys: set[str], durable: bool,
) -> bool:  # fmt: skip
    """Copy ``family``'s entries of ``shard_set`` whose key is not in ``drop_keys`` into
    ``new_set`` (renamed into place, not yet referenced); False when it has no shard."""
    shards = shard_files(output_dir, {shard_set}, family)
    if not shards:
        return False
    key_of = _KEY_OF[family.stem]
    name = family.name(new_set, "00000-of-00001")
    tmp = join_path(staging, f"compact/{name}")
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        for raw in (raw for shard in shards for raw in records.read_raw(shard)):
            if key_of(raw) not in drop_keys:
                _TFRecordUtil.write_record(out, raw)
    if durable:
        fsync_file(tmp)
    rename(tmp, join_path(output_dir, f"{family.directory}/{name}"))
    return True


def _compact(
    output_dir: str, staging: str, shard_set: str, drop_keys: set[str], durable: bool
) -> str | None:
    """Copy the records (and audit rows) of ``shard_set`` whose key is not in ``drop_keys``
    into a new shard set; returns its id, None when the set has no shard."""
    new_set = new_shard_set()
    found = [_compact_family(output_dir, staging, family, shard_set, new_set, drop_keys,
                             durable) for family in SHARD_FAMILIES]  # fmt: skip
    return new_set if any(found) else None


def publish(
    output_dir: str, *, shard_set: str, carried: Sequence[dict], fsync: bool = False
) -> Published:
    """Make the attempt staged in ``.staging/<shard_set>`` the output of ``output_dir``.

    ``carried``: committed rows to keep (incremental runs: those of the same model and
    settings; else none). ``fsync`` (local directories): everything the attempt wrote
    (shards, PNGs, staged rows) is flushed first, and each file and directory entry is
    synced before the rename that depends on it, so after a power loss the manifest names
    only shards and artifacts that are whole. Steps, each safe to be cut short
    (recover_output cleans up):

    1. earlier rows for keys this attempt recomputed are superseded: their shard sets are
       rewritten without those records (a new set; rare: a file changed under its key);
    2. the staged shards are renamed to records/saliency-<shard_set>-SSSSS-of-NNNNN;
    3. manifest.jsonl = carried + new rows, replaced atomically: the commit;
    4. failures.jsonl replaced; shards no row references deleted; staging deleted.
    """
    staging = staging_dir(output_dir, shard_set)
    durable = fsync and is_local(output_dir)
    if durable:  # the workers' shards and PNGs, in one call
        sync_filesystem(output_dir)
    new_rows = read_jsonl(join_path(staging, MANIFEST_NAME))
    new_keys = {row["key"] for row in new_rows}
    kept = [dict(row) for row in carried if row["key"] not in new_keys]
    superseded = len(carried) - len(kept)
    kept_sets = {str(row["shard_set"]) for row in kept}
    for old_set in sorted({str(r["shard_set"]) for r in carried if r["key"] in new_keys}):
        new_set = (
            _compact(output_dir, staging, old_set, new_keys, durable)
            if old_set in kept_sets
            else None
        )
        for row in kept:
            if new_set and row["shard_set"] == old_set:
                row["shard_set"] = new_set
    moved = 0
    for family in SHARD_FAMILIES:
        staged_root = join_path(staging, family.directory).rstrip("/") + "/"
        for path in list_files(staged_root):
            n = family.staged(path[len(staged_root) :])
            if n:
                target = f"{family.directory}/{family.name(shard_set, n)}"
                rename(path, join_path(output_dir, target))
                moved += family is RECORD_SHARDS
        if durable and FileSystems.exists(join_path(output_dir, family.directory)):
            fsync_dir(join_path(output_dir, family.directory))  # before the manifest
    rows = kept + new_rows
    write_sorted_jsonl(join_path(output_dir, MANIFEST_NAME), rows, sort_key=manifest_sort_key,
                       fsync=durable)  # fmt: skip
    failures = read_bytes(join_path(staging, FAILURES_NAME))
    write_atomic(join_path(output_dir, FAILURES_NAME), failures, fsync=durable)
    referenced = {str(row["shard_set"]) for row in rows}
    delete_files(_stale_record_files(output_dir, referenced))
    delete_tree(staging)
    if is_local(output_dir):
        with contextlib.suppress(OSError):  # only when empty: no other attempt's files
            os.rmdir(join_path(output_dir, STAGING_DIR))
    return Published(records_total=len(rows), shards=moved, superseded=superseded)


def remove_empty_output(output_dir: str) -> None:
    """Remove a local output directory that a run created but never started in: its lock
    file, then the directory itself if nothing else is there."""
    with contextlib.suppress(OSError):
        os.remove(os.path.join(output_dir, LOCK_NAME))
    with contextlib.suppress(OSError):
        os.rmdir(join_path(output_dir, STAGING_DIR))
    with contextlib.suppress(OSError):
        os.rmdir(output_dir)
