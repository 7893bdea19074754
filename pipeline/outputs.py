"""The output directory and its crash-safe protocol: layout, atomic files, staging,
publish, recovery and the run lock. No Beam transforms here (:mod:`pipeline.sinks` has them).

Every file goes through ``apache_beam.io.filesystems.FileSystems`` (or ``os`` for local
paths), so local paths and object stores (gs://, s3://) behave the same.

Output layout under ``output_dir`` (what readers see)::

    records/saliency-<set>-SSSSS-of-NNNNN.tfrecord   the shards of committed shard sets
    artifacts/<safe_key(key)>/<method>_<view>[_t<class>].png   sinks.WriteArtifacts
    manifest.jsonl       one row per record, sorted by record_id: the commit point
    failures.jsonl       the inputs of the last run that failed, sorted by key (may be empty)
    summary.json         the last run's counts
    .staging/<set>/      one run attempt's unpublished outputs (hidden; removed)
    .lock                held by the running run (local directories only)

``run`` points WriteRecords, WriteManifest and WriteFailures at ``.staging/<set>/``, and
:func:`publish` moves the result into place once the pipeline succeeded: shards are renamed
into ``records/`` first, then ``manifest.jsonl`` is replaced (the commit), then shards that
no manifest row references are deleted. :func:`recover_output`, run before every run,
removes what a killed run left (staging directories, uncommitted shards, temp files), so a
crash at any moment followed by a rerun ends with each record exactly once.
:func:`output_lock` keeps a second run out of a local output directory.

Single files are written whole (:func:`write_atomic`): locally to a temporary name (hidden,
in the same directory or in the staging directory) and renamed; on object stores directly
(an object becomes visible only when its upload completes). A reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

RECORDS_DIR = "records"
RECORDS_PREFIX = "records/saliency"
RECORDS_SUFFIX = ".tfrecord"
MANIFEST_NAME = "manifest.jsonl"
FAILURES_NAME = "failures.jsonl"
SUMMARY_NAME = "summary.json"
STAGING_DIR = ".staging"
LOCK_NAME = ".lock"

_SHARD_NAME = re.compile(r"^saliency-(?P<set>[A-Za-z0-9]+)-(?P<n>\d{5}-of-\d{5})\.tfrecord$")
_BEAM_SHARD_NAME = re.compile(r"^saliency-(?P<n>\d{5}-of-\d{5})\.tfrecord$")  # also pre-1.0
_TEMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{32}$")


def join_path(output_dir: str, relative: str) -> str:
    """``output_dir`` joined with a '/'-separated relative path (any Beam filesystem)."""
    return FileSystems.join(output_dir, *relative.split("/"))


# --------------------------------------------------------------------------- atomic files


def _is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) is None


def write_atomic(
    path: str,
    data: bytes | Iterable[bytes],
    *,
    mime_type: str = "",
    tmp_dir: str | None = None,
) -> str:
    """Write ``data`` (bytes, or an iterable of byte chunks) to ``path`` atomically.

    Local paths: a hidden temporary file (in ``tmp_dir``, default the target's directory,
    same file system) renamed over ``path``. Object stores: one direct write, after the
    data is complete in memory (an object is visible only once its upload finishes).
    Returns ``path``.
    """
    payload = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else b"".join(data)
    if not _is_local(path):
        with FileSystems.create(
            path,
            mime_type=mime_type or "application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,
        ) as handle:
            handle.write(payload)
        return path
    directory, name = os.path.split(path)
    os.makedirs(directory or ".", exist_ok=True)
    try:
        _replace_from_temp(path, payload, tmp_dir or directory or ".")
    except OSError as exc:
        if exc.errno != errno.EXDEV or not tmp_dir:
            raise
        _replace_from_temp(path, payload, directory or ".")  # tmp_dir on another device
    return path


def _replace_from_temp(path: str, payload: bytes, tmp_dir: str) -> None:
    os.makedirs(tmp_dir, exist_ok=True)
    tmp = os.path.join(tmp_dir, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_json(path: str, obj: object) -> str:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically (run summaries)."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return write_atomic(path, text.encode("utf-8"), mime_type="application/json")


def read_json(path: str) -> dict:
    """A JSON file written by write_json (any Beam filesystem)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return json.loads(handle.read().decode("utf-8"))


def read_jsonl(path: str) -> list[dict]:
    """The rows of a JSON-lines file (manifest.jsonl, failures.jsonl), in file order."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        text = handle.read().decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _json_line(row: dict) -> bytes:
    return (json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_sorted_jsonl(
    path: str, rows: Iterable[dict], *, sort_key: Callable[[dict], tuple]
) -> str:
    """Sort ``rows`` by ``sort_key`` (ties by their JSON text) and write them atomically."""
    lines = sorted((sort_key(r), _json_line(r)) for r in rows)
    return write_atomic(path, (line for _, line in lines), mime_type="application/x-ndjson")


def manifest_sort_key(row: dict) -> tuple:
    """Manifest rows are sorted by record_id (one row per record)."""
    return (str(row["record_id"]),)


# --------------------------------------------------------------------------- publishing


class OutputBusyError(RuntimeError):
    """Another run holds the output directory."""


def new_shard_set() -> str:
    """A fresh id for one run attempt's records: UTC time (sortable) + 8 random hex."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + uuid.uuid4().hex[:8]


def staging_dir(output_dir: str, shard_set: str) -> str:
    """Where the attempt ``shard_set`` writes before :func:`publish`."""
    return join_path(output_dir, f"{STAGING_DIR}/{shard_set}")


def shard_set_of(name: str) -> str | None:
    """The shard set of a published shard's file name, None for any other name."""
    m = _SHARD_NAME.match(name)
    return m["set"] if m else None


@contextlib.contextmanager
def output_lock(output_dir: str) -> Iterator[None]:
    """Hold ``output_dir`` for one run: a local directory is locked with flock (released
    when the process ends, even by SIGKILL); object stores are not locked (one run per
    output dir is then the scheduler's job)."""
    if not _is_local(output_dir):
        yield
        return
    import fcntl

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
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _list_files(directory: str) -> list[str]:
    """Every file below ``directory`` (recursive; [] when it does not exist)."""
    if _is_local(directory):
        found = []
        for dirpath, _, files in os.walk(directory):
            found += [os.path.join(dirpath, name) for name in files]
        return sorted(found)
    try:
        matched = FileSystems.match([directory.rstrip("/") + "/**"])[0].metadata_list
    except Exception:  # noqa: BLE001 - nothing there
        return []
    return sorted(m.path for m in matched if not m.path.endswith("/"))


def _delete_files(paths: Iterable[str]) -> int:
    n = 0
    for path in paths:
        try:
            if _is_local(path):
                os.remove(path)
            else:
                FileSystems.delete([path])
            n += 1
        except Exception:  # noqa: BLE001 - already gone is fine; anything else is raised
            if FileSystems.exists(path):
                raise
    return n


def _delete_tree(directory: str) -> int:
    files = _list_files(directory)
    if _is_local(directory):
        shutil.rmtree(directory, ignore_errors=True)
        return len(files)
    return _delete_files(files)


def _rename(source: str, destination: str) -> None:
    if _is_local(source):
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        os.replace(source, destination)
    else:
        FileSystems.rename([source], [destination])


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


def _records_dir(output_dir: str) -> str:
    return join_path(output_dir, RECORDS_DIR)


def _stale_record_files(output_dir: str, referenced: set[str]) -> list[str]:
    """Files in records/ that no committed row needs: shards of other sets, shards of the
    old unnamed layout, Beam temp files, our temp files. Other names are left alone."""
    root = _records_dir(output_dir).rstrip("/") + "/"
    stale = []
    for path in _list_files(root):
        rel = path[len(root) :] if path.startswith(root) else os.path.basename(path)
        name = rel.rsplit("/", 1)[-1]
        shard_set = shard_set_of(rel)
        if shard_set is not None:
            if shard_set not in referenced:
                stale.append(path)
        elif _BEAM_SHARD_NAME.match(rel) or rel.startswith("beam-temp-") or _TEMP_NAME.match(name):
            stale.append(path)
    return stale


def recover_output(output_dir: str) -> int:
    """Remove what interrupted runs left in ``output_dir``; returns the files removed.

    Staging directories (unpublished shards, Beam temp files, temp PNGs), shards that the
    committed manifest does not reference (a publish cut short) and temp files of
    interrupted writes. Committed outputs are not touched. Run it holding output_lock.
    """
    removed = _delete_tree(join_path(output_dir, STAGING_DIR))
    referenced = {str(row.get("shard_set")) for row in read_manifest(output_dir)}
    removed += _delete_files(_stale_record_files(output_dir, referenced))
    if _is_local(output_dir) and os.path.isdir(output_dir):
        temps = [n for n in os.listdir(output_dir) if _TEMP_NAME.match(n)]
        removed += _delete_files(os.path.join(output_dir, n) for n in temps)
    return removed


@dataclasses.dataclass(frozen=True)
class Published:
    """What :func:`publish` did."""

    records_total: int  # manifest rows after publishing (earlier runs' included)
    shards: int  # shards of this attempt moved into records/
    superseded: int  # earlier rows replaced by this attempt's rows for the same key


def _shard_files(output_dir: str, shard_set: str) -> list[str]:
    root = _records_dir(output_dir).rstrip("/") + "/"
    return [p for p in _list_files(root) if shard_set_of(p[len(root) :]) == shard_set]


def _compact(output_dir: str, staging: str, shard_set: str, drop_keys: set[str]) -> str | None:
    """Copy the records of ``shard_set`` whose key is not in ``drop_keys`` into a new shard
    set (renamed into records/, not yet referenced); returns its id, None when no shard."""
    import tensorflow as tf
    from apache_beam.io.tfrecordio import _TFRecordUtil  # the format Beam's sink writes

    shards = _shard_files(output_dir, shard_set)
    if not shards:
        return None
    new_set = new_shard_set()
    tmp = join_path(staging, f"compact/saliency-{new_set}-00000-of-00001{RECORDS_SUFFIX}")
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        for shard in shards:
            with FileSystems.open(shard, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                while (raw := _TFRecordUtil.read_record(f)) is not None:
                    feature = tf.train.Example.FromString(raw).features.feature["image/key"]
                    if feature.bytes_list.value[0].decode("utf-8") not in drop_keys:
                        _TFRecordUtil.write_record(out, raw)
    _rename(tmp, join_path(output_dir, f"{RECORDS_DIR}/{tmp.rsplit('/', 1)[-1]}"))
    return new_set


def publish(output_dir: str, *, shard_set: str, carried: Sequence[dict]) -> Published:
    """Make the attempt staged in ``.staging/<shard_set>`` the output of ``output_dir``.

    ``carried``: committed rows to keep (incremental runs: those of the same model and
    settings; else none). Steps, each safe to be cut short (recover_output cleans up):

    1. earlier rows for keys this attempt recomputed are superseded: their shard sets are
       rewritten without those records (a new set; rare: a file changed under its key);
    2. the staged shards are renamed to records/saliency-<shard_set>-SSSSS-of-NNNNN;
    3. manifest.jsonl = carried + new rows, replaced atomically: the commit;
    4. failures.jsonl replaced; shards no row references deleted; staging deleted.
    """
    staging = staging_dir(output_dir, shard_set)
    new_rows = read_jsonl(join_path(staging, MANIFEST_NAME))
    new_keys = {row["key"] for row in new_rows}
    kept = [dict(row) for row in carried if row["key"] not in new_keys]
    superseded = len(carried) - len(kept)
    kept_sets = {str(row["shard_set"]) for row in kept}
    for old_set in sorted({str(r["shard_set"]) for r in carried if r["key"] in new_keys}):
        new_set = _compact(output_dir, staging, old_set, new_keys) if old_set in kept_sets else None
        for row in kept:
            if new_set and row["shard_set"] == old_set:
                row["shard_set"] = new_set
    staged_root = join_path(staging, RECORDS_DIR).rstrip("/") + "/"
    moved = 0
    for path in _list_files(staged_root):
        m = _BEAM_SHARD_NAME.match(path[len(staged_root) :])
        if m:
            name = f"saliency-{shard_set}-{m['n']}{RECORDS_SUFFIX}"
            _rename(path, join_path(output_dir, f"{RECORDS_DIR}/{name}"))
            moved += 1
    rows = kept + new_rows
    write_sorted_jsonl(join_path(output_dir, MANIFEST_NAME), rows, sort_key=manifest_sort_key)
    with FileSystems.open(
        join_path(staging, FAILURES_NAME), compression_type=CompressionTypes.UNCOMPRESSED
    ) as handle:
        write_atomic(join_path(output_dir, FAILURES_NAME), handle.read())
    referenced = {str(row["shard_set"]) for row in rows}
    _delete_files(_stale_record_files(output_dir, referenced))
    _delete_tree(staging)
    if _is_local(output_dir):
        with contextlib.suppress(OSError):  # only when empty: no other attempt's files
            os.rmdir(join_path(output_dir, STAGING_DIR))
    return Published(records_total=len(rows), shards=moved, superseded=superseded)
