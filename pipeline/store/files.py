"""Files on any Beam filesystem: atomic writes, JSON / JSON lines, listing, delete, rename.

Every file goes through ``apache_beam.io.filesystems.FileSystems`` (or ``os`` for local
paths), so local paths and object stores (gs://, s3://) behave the same. Single files are
written whole (:func:`write_atomic`): locally to a temporary name (hidden, in the same
directory or in a staging directory) and renamed; on object stores directly (an object
becomes visible only when its upload completes). A reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.store import object_stores

# Every process that touches our files (the launcher, each Beam worker unpickling our
# DoFns or sinks) gets the object-store fixes before its first s3:// or gs:// access.
object_stores.install()


def is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) is None


def fsync_dir(directory: str) -> None:
    """Make a local directory's entries (renames, new files) durable."""
    fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
    """Make a local file's data durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: str) -> None:
    """Flush every file written on the file system holding local ``path`` (Linux syncfs:
    one call for the thousands of PNGs and shards the workers wrote; elsewhere sync)."""
    syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs({path}): {os.strerror(code)}")
    finally:
        os.close(fd)


def write_atomic(
    path: str,
    data: bytes | Iterable[bytes],
    *,
    mime_type: str = "",
    tmp_dir: str | None = None,
    fsync: bool = False,
) -> str:
    """Write ``data`` (bytes, or an iterable of byte chunks) to ``path`` atomically.

    Local paths: a hidden temporary file (in ``tmp_dir``, default the target's directory,
    same file system) renamed over ``path``; with ``fsync`` the file is synced before the
    rename and the directory after it, so a power loss leaves the old or the new file.
    Object stores: one direct write, after the data is complete in memory (an object is
    visible only once its upload finishes, and durable then). Returns ``path``.
    """
    payload = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else b"".join(data)
    if not is_local(path):
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
        _replace_from_temp(path, payload, tmp_dir or directory or ".", fsync)
    except OSError as exc:
        if exc.errno != errno.EXDEV or not tmp_dir:
            raise
        _replace_from_temp(path, payload, directory or ".", fsync)  # tmp_dir on another device
    if fsync:
        fsync_dir(directory)
    return path


def _replace_from_temp(path: str, payload: bytes, tmp_dir: str, fsync: bool) -> None:
    os.makedirs(tmp_dir, exist_ok=True)
    tmp = os.path.join(tmp_dir, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_json(path: str, obj: object, *, fsync: bool = False) -> str:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically (run summaries)."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return write_atomic(path, text.encode("utf-8"), mime_type="application/json", fsync=fsync)


def read_bytes(path: str) -> bytes:
    """A whole file on any Beam filesystem (never decompressed by its name)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read()


def read_text(path: str) -> str:
    """A UTF-8 text file on any Beam filesystem."""
    return read_bytes(path).decode("utf-8")


def read_json(path: str) -> dict:
    """A JSON file written by write_json (any Beam filesystem)."""
    return json.loads(read_text(path))


def read_jsonl(path: str) -> list[dict]:
    """The rows of a JSON-lines file (manifest.jsonl, failures.jsonl), in file order."""
    return [json.loads(line) for line in read_text(path).splitlines() if line.strip()]


def _json_line(row: dict) -> bytes:
    return (json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_sorted_jsonl(
    path: str, rows: Iterable[dict], *, sort_key: Callable[[dict], tuple], fsync: bool = False
) -> str:
    """Sort ``rows`` by ``sort_key`` (ties by their JSON text) and write them atomically."""
    lines = sorted((sort_key(r), _json_line(r)) for r in rows)
    return write_atomic(
        path, (line for _, line in lines), mime_type="application/x-ndjson", fsync=fsync
    )


def list_files(directory: str) -> list[str]:
    """Every file below ``directory`` (recursive; [] when it does not exist)."""
    if is_local(directory):
        found = []
        for dirpath, _, files in os.walk(directory):
            found += [os.path.join(dirpath, name) for name in files]
        return sorted(found)
    try:
        matched = FileSystems.match([directory.rstrip("/") + "/**"])[0].metadata_list
    except Exception:  # noqa: BLE001 - nothing there
        return []
    return sorted(m.path for m in matched if not m.path.endswith("/"))


def delete_files(paths: Iterable[str]) -> int:
    n = 0
    for path in paths:
        try:
            if is_local(path):
                os.remove(path)
            else:
                FileSystems.delete([path])
            n += 1
        except Exception:  # noqa: BLE001 - already gone is fine; anything else is raised
            if FileSystems.exists(path):
                raise
    return n


def delete_tree(directory: str) -> int:
    files = list_files(directory)
    if is_local(directory):
        shutil.rmtree(directory, ignore_errors=True)
        return len(files)
    return delete_files(files)


def rename(source: str, destination: str) -> None:
    """Move a file (local: os.replace; object stores: Beam's copy + delete). Local renames
    become durable with :func:`fsync_dir` of the destination's directory."""
    if is_local(source):
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        os.replace(source, destination)
    else:
        FileSystems.rename([source], [destination])


def done_token(key: str, sha256: str) -> str:
    """Identity of a done input in the incremental index: its key and content hash."""
    text = f"{key}\0{sha256}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()[:32]


def write_done_index(path: str, tokens: Iterable[str]) -> int:
    """Write the incremental index (one :func:`done_token` per line); returns its size."""
    lines = sorted(set(tokens))
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write("".join(f"{t}\n" for t in lines).encode("ascii"))
    return len(lines)


def read_done_index(path: str) -> frozenset[str]:
    """The tokens written by :func:`write_done_index`."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return frozenset(f.read().decode("ascii").split())
