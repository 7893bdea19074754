"""The audit history: every audit is copied from audit/ into audits/<UTC timestamp>/, and
audits/latest names the newest (a small text file, since object stores have no symlinks).
The pointer is written last, so a crash mid-copy leaves the previous entry as the latest."""

import time

from apache_beam.io.filesystems import FileSystems

from pipeline.store.files import list_files, read_bytes, read_json, read_text, write_atomic
from pipeline.store.layout import AUDIT_DIR, AUDIT_JSON, AUDITS_LATEST, audit_entry, join_path


def stamp(now: float | None = None) -> str:
    """A sortable UTC timestamp, e.g. 20261201T134500Z."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))


def latest_audit(output_dir: str) -> tuple[str, dict] | None:
    """(entry name, its audit.json) of the newest archived audit, or None."""
    pointer = join_path(output_dir, AUDITS_LATEST)
    if not FileSystems.exists(pointer):
        return None
    name = read_text(pointer).strip()
    path = join_path(output_dir, f"{audit_entry(name)}/audit.json")
    return (name, read_json(path)) if FileSystems.exists(path) else None


def archive_audit(output_dir: str, name: str) -> str:
    """Copy audit/ into audits/<name>/ and point audits/latest at it; returns its path."""
    source = join_path(output_dir, AUDIT_DIR)
    target = join_path(output_dir, audit_entry(name))
    prefix = source.rstrip("/") + "/"
    for path in list_files(source):
        relative = path[len(prefix) :] if path.startswith(prefix) else path.rsplit("/", 1)[-1]
        write_atomic(join_path(target, relative), read_bytes(path))
    if not FileSystems.exists(join_path(target, "audit.json")):
        raise FileNotFoundError(f"{join_path(output_dir, AUDIT_JSON)} was not archived")
    write_atomic(join_path(output_dir, AUDITS_LATEST), (name + "\n").encode("utf-8"))
    return target
