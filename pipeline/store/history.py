"""The audit history: every audit is copied from audit/ into audits/<UTC timestamp>/, and
audits/latest names the newest (a small text file, since object stores have no symlinks).
The pointer is written last, so a crash mid-copy leaves the previous entry as the latest;
:func:`recover_audits`, run before every audit, removes what a killed audit left."""

import time

from apache_beam.io.filesystems import FileSystems

from pipeline.store.files import (
    delete_files,
    delete_tree,
    list_files,
    read_bytes,
    read_json,
    read_text,
    write_atomic,
)
from pipeline.store.layout import (
    AUDIT_DIR,
    AUDIT_JSON,
    AUDITS_DIR,
    AUDITS_LATEST,
    TEMP_NAME,
    audit_entry,
    join_path,
)

_BEAM_TEMP = "beam-temp-"  # WriteToText's temporary directory prefix


def stamp(now: float | None = None) -> str:
    """A sortable UTC timestamp, e.g. 20261201T134500Z."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))


def latest_name(output_dir: str) -> str | None:
    """The name of the entry audits/latest points at (None before the first audit)."""
    pointer = join_path(output_dir, AUDITS_LATEST)
    return read_text(pointer).strip() if FileSystems.exists(pointer) else None


def recover_audits(output_dir: str) -> int:
    """Remove what an audit killed part-way left; returns the files removed.

    Archive entries newer than the one audits/latest names (or all, with no pointer) were
    never pointed at: a copy cut short. In audit/, Beam's temporary directories and our
    temporary files of interrupted writes. audit/ itself is rewritten whole by the audit
    that follows; published entries are never touched. Run it holding the output lock.
    """
    latest = latest_name(output_dir)
    trees, temps = set(), []
    for base in (AUDITS_DIR, AUDIT_DIR):
        root = join_path(output_dir, base).rstrip("/") + "/"
        for path in list_files(root):
            relative = path[len(root) :] if path.startswith(root) else path
            top = relative.split("/", 1)[0]
            unpointed = base == AUDITS_DIR and "/" in relative and (latest is None or top > latest)
            if unpointed or (base == AUDIT_DIR and top.startswith(_BEAM_TEMP)):
                trees.add(join_path(output_dir, f"{base}/{top}"))
            elif TEMP_NAME.match(relative.rsplit("/", 1)[-1]):
                temps.append(path)
    return sum(delete_tree(tree) for tree in sorted(trees)) + delete_files(temps)


def latest_audit(output_dir: str) -> tuple[str, dict] | None:
    """(entry name, its audit.json) of the newest archived audit, or None."""
    name = latest_name(output_dir)
    if name is None:
        return None
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
