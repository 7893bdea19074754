"""The audit under faults: killed at any point (SIGKILL of the real CLI at random moments and
in each phase; the archive cut before each of its writes in-process), then run again.
audits/latest never names a partial entry; after the rerun audit.json, rows.jsonl, the maps,
report.html and the archive entry are complete and agree, and nothing temporary is left."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time

import pytest

from pipeline.audit.pipeline import run_audit
from pipeline.beam.run import run
from pipeline.config.files import load_config
from pipeline.store import history
from pipeline.testing.processes import start_cli
from pipeline.testing.reliability import (
    base_overrides,
    kill_when,
    noise_png,
    read_tree,
    write_files,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_IMAGES = 30
AUDIT = ["audit.enabled=true", "audit.sanity_samples=0", "saliency.methods=[vanilla,guided]"]


class _Killed(BaseException):
    """Stands for SIGKILL (a BaseException: nothing catches it)."""


def _map_paths(node) -> list[str]:
    """Every audit/maps/... PNG path audit.json names."""
    if isinstance(node, dict):
        return [p for v in node.values() for p in _map_paths(v)]
    if isinstance(node, list):
        return [p for v in node for p in _map_paths(v)]
    return [node] if isinstance(node, str) and node.startswith("audit/maps/") else []


def _check_audit_dir(directory: str, n_records: int) -> dict:
    """One audit's files agree: audit.json, its rows, every map it names, the report."""
    files = read_tree(directory)
    audit = json.loads(files["audit.json"])
    assert audit["records"] == n_records
    rows = [json.loads(line) for line in files["rows.jsonl"].splitlines()]
    methods = {row["method"] for row in rows}
    assert methods == {"vanilla", "guided"}
    assert sorted((r["record_id"], r["method"]) for r in rows) == sorted(
        {(r["record_id"], r["method"]) for r in rows}
    )  # each (record, method) row exactly once
    assert len(rows) == n_records * len(methods)
    maps = _map_paths(audit)
    assert maps and all(p.removeprefix("audit/") in files for p in maps)
    assert f"{n_records} records".encode() in files["report.html"]
    leftovers = [p for p in files if ".tmp-" in p or "beam-temp" in p]
    assert not leftovers, leftovers
    return files


def _check_latest(out: str, n_records: int) -> str | None:
    """audits/latest names a complete entry (or there is none yet)."""
    name = history.latest_name(out)
    if name is not None:
        _check_audit_dir(os.path.join(out, "audits", name), n_records)
    return name


def _check_after_rerun(out: str, n_records: int) -> None:
    current = _check_audit_dir(os.path.join(out, "audit"), n_records)
    name = _check_latest(out, n_records)
    archived = read_tree(os.path.join(out, "audits", name))
    assert archived == current  # the archive is this audit, byte for byte
    entries = sorted(os.listdir(os.path.join(out, "audits")))
    assert all(e <= name for e in entries if e != "latest"), entries  # no partial entry left


@pytest.fixture()
def audited(tmp_path, tiny_model) -> tuple[str, list[str]]:
    """An output dir of N_IMAGES records with one audit done: (out, overrides)."""
    model = tiny_model
    bucket = str(tmp_path / "bucket")
    write_files(bucket, {f"img_{i:02d}.png": noise_png(i) for i in range(N_IMAGES)})
    out = str(tmp_path / "out")
    overrides = [*base_overrides(model, f"{bucket}/*", out), *AUDIT]
    config = load_config(None, overrides)
    run(config)
    run_audit(config)
    return out, overrides


def _audit_cli(overrides: list[str], log) -> subprocess.Popen:
    sets = [arg for o in overrides for arg in ("--set", o)]
    return start_cli(["audit", *sets], stdout=log, stderr=log)


def _newer(path: str, since: float) -> bool:
    with contextlib.suppress(OSError):
        return os.stat(path).st_mtime > since
    return False


def _phase(out: str, name: str, since: float):
    """A moment inside the audit's writes (after wall time ``since``): a kill condition."""
    audit = os.path.join(out, "audit")
    conditions = {
        "rows being written": lambda: any(n.startswith("beam-temp") for n in os.listdir(audit)),
        "maps being written": lambda: any(
            _newer(os.path.join(d, f), since) for d, _, fs in os.walk(audit) for f in fs
        ),
        "audit.json written": lambda: _newer(os.path.join(audit, "audit.json"), since),
        "report written": lambda: _newer(os.path.join(audit, "report.html"), since),
    }
    return conditions[name]


# The archive copy takes milliseconds: test_archive_cut_before_each_write cuts it instead.
PHASES = ("rows being written", "maps being written", "audit.json written", "report written")


@pytest.mark.slow
def test_sigkill_at_random_points_of_the_audit_then_rerun(tmp_path, audited):
    out, overrides = audited
    first = _check_latest(out, N_IMAGES)
    with open(tmp_path / "full.log", "wb") as log:
        start = time.monotonic()
        assert _audit_cli(overrides, log).wait(timeout=300) == 0
        duration = time.monotonic() - start
    rng = random.Random(2026)
    delays = [rng.uniform(0.2, 0.8) * duration for _ in range(3)]
    for kill in (*PHASES, *delays):
        started = time.time()
        if isinstance(kill, str):
            ready = _phase(out, kill, started)
        else:
            ready = lambda at=started + kill: time.time() >= at  # noqa: E731
        with open(tmp_path / "killed.log", "wb") as log:
            proc = _audit_cli(overrides, log)
            kill_when(proc, ready, timeout=300)
        assert proc.returncode == -signal.SIGKILL, kill  # killed in that phase, not after
        assert _check_latest(out, N_IMAGES) is not None, kill  # never partial, never gone
    with open(tmp_path / "rerun.log", "wb") as log:
        code = _audit_cli(overrides, log).wait(timeout=300)
    assert code == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    _check_after_rerun(out, N_IMAGES)
    assert history.latest_name(out) > first


@pytest.mark.slow
def test_archive_cut_before_each_write_then_rerun(audited, monkeypatch):
    """In-process: the archive copy dies before its k-th write, for every k."""
    out, overrides = audited
    config = load_config(None, overrides)
    before = history.latest_name(out)
    real = history.write_atomic
    step = 0
    while True:
        step += 1
        calls: list[str] = []

        def dying(path, data, _step=step, _calls=calls, **kwargs):
            _calls.append(path)
            if len(_calls) == _step:
                raise _Killed(path)
            return real(path, data, **kwargs)

        monkeypatch.setattr(history, "write_atomic", dying)
        with contextlib.suppress(_Killed):
            run_audit(config)
        monkeypatch.setattr(history, "write_atomic", real)
        if len(calls) < step:
            break
        assert history.latest_name(out) == before  # the pointer is the last write
        _check_latest(out, N_IMAGES)
    assert step > 5  # audit.json, rows, report and maps were each cut
    _check_after_rerun(out, N_IMAGES)
    assert history.latest_name(out) > before
