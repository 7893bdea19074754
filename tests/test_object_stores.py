"""The job on object stores through real servers on 127.0.0.1: s3:// (moto's server) and
gs:// (gcp-storage-emulator). Inputs listed and read from the bucket; records, artifacts,
manifest, failures, summary and the audit written there; an incremental rerun; a run
killed with SIGKILL, then rerun; the lock object that keeps a second run out."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time

import pytest
from PIL import Image

from pipeline.cli import EXIT_BUSY
from pipeline.store import records
from pipeline.store.object_lock import LockBusy, LockLost, ObjectLock
from pipeline.store.object_stores import configure
from pipeline.store.publish import OutputBusyError, _Held, output_lock
from pipeline.testing.processes import start_cli
from pipeline.testing.reliability import base_overrides, kill_when, noise_png
from pipeline.testing.stores import SERVERS, Store

pytestmark = pytest.mark.slow  # servers (moto, gcp-storage-emulator) and subprocess runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAD = {"cut.png": noise_png(99)[:60]}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def store(request) -> Store:
    with SERVERS[request.param]() as running:
        yield running


def _options(store: Store):
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions([f"--{o.removeprefix('beam.')}" for o in store.overrides])


def _upload(store: Store, prefix: str, files: dict[str, bytes]) -> str:
    for name, data in files.items():
        store.put(f"{prefix}/{name}", data)
    return store.url(f"{prefix}/*")


def _overrides(store: Store, model: str, pattern: str, out: str, *extra: str) -> list[str]:
    sets = [*base_overrides(model, pattern, out), "output.num_shards=3", *store.overrides, *extra]
    return [arg for s in sets for arg in ("--set", s)]


def _cli(store: Store, args: list[str], **popen) -> subprocess.Popen:
    return start_cli(["run", "-q", *args], extra_env=store.env, **popen)


def _run(store: Store, args: list[str]) -> subprocess.CompletedProcess:
    proc = _cli(store, args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _check_complete(store: Store, prefix: str) -> dict:
    """Each record once, manifest == records, every listed artifact a whole PNG, every
    JSON readable, nothing temporary, no lock and no staging left."""
    configure(_options(store))
    objects = store.sizes(prefix + "/")
    names = [k[len(prefix) + 1 :] for k in objects]
    assert not [n for n in names if n.startswith(".staging") or "beam-temp" in n or ".tmp-" in n]
    assert ".lock" not in names
    recs = list(records.read(store.url(f"{prefix}/records/*.tfrecord")))
    ids = [r.record_id for r in recs]
    assert len(ids) == len(set(ids))
    manifest = [json.loads(line) for line in store.get(f"{prefix}/manifest.jsonl").splitlines()]
    assert sorted(row["record_id"] for row in manifest) == sorted(ids)
    for row in manifest:
        for views in row["artifacts"].values():
            for rel in views.values():
                Image.open(io.BytesIO(store.get(f"{prefix}/{rel}"))).load()
    for key in objects:  # every object whole: what a reader of the bucket gets
        data = store.get(key)
        if key.endswith(".png"):
            Image.open(io.BytesIO(data)).load()
        elif key.endswith(".json"):
            json.loads(data)
        elif key.endswith(".jsonl"):
            [json.loads(line) for line in data.splitlines()]
        elif key.endswith(".html"):
            assert data.decode("utf-8").rstrip().endswith("</html>"), key
    failures = [json.loads(line) for line in store.get(f"{prefix}/failures.jsonl").splitlines()]
    summary = json.loads(store.get(f"{prefix}/summary.json"))
    return {"records": recs, "failures": failures, "summary": summary, "objects": objects}


def test_run_audit_and_incremental_rerun_on_the_store(store, tiny_model):
    good = {f"img_{i}.png": noise_png(i) for i in range(6)}
    pattern = _upload(store, "inc/in", good)
    out = store.url("inc/out")
    args = _overrides(
        store, tiny_model, pattern, out, "audit.enabled=true", "audit.sanity_samples=2"
    )
    first = _run(store, args)
    assert first.returncode == 0, first.stderr[-3000:]
    got = _check_complete(store, "inc/out")
    assert sorted(r.key for r in got["records"]) == sorted(good)
    # No failures: an empty failures.jsonl (a zero-length object, which Beam's S3 upload
    # cannot write: apache/beam#21369) exists.
    assert got["objects"]["inc/out/failures.jsonl"] == 0 and got["failures"] == []
    assert got["summary"]["images_written"] == 6 and got["summary"]["reconciled"] is True
    audit = json.loads(store.get("inc/out/audit/audit.json"))
    assert audit["records"] == 6
    assert b"<html" in store.get("inc/out/audit/report.html")[:200].lower()
    assert store.get("inc/out/audits/latest").strip()

    _upload(store, "inc/in", {"new.png": noise_png(50), **BAD})
    again = _run(store, [*args, "--set", "run.incremental=true", "--set", "audit.enabled=false"])
    assert again.returncode == 0, again.stderr[-3000:]
    got = _check_complete(store, "inc/out")
    summary = got["summary"]
    assert (summary["images_skipped"], summary["images_written"]) == (6, 1)
    assert [f["key"] for f in got["failures"]] == list(BAD)
    assert sorted(r.key for r in got["records"]) == sorted([*good, "new.png"])


def test_sigkill_mid_run_then_rerun_on_the_store(store, tiny_model, tmp_path):
    good = {f"img_{i:02d}.png": noise_png(i) for i in range(24)}
    pattern = _upload(store, "kill/in", {**good, **BAD})
    out = store.url("kill/out")
    args = _overrides(
        store, tiny_model, pattern, out, "saliency.methods=[smoothgrad]", "saliency.samples=1000",
        "saliency.sample_batch_size=100", "batch.max_batch_size=2",
    )  # fmt: skip

    def mid_way() -> bool:  # some artifacts are on the bucket, most are not
        return sum(k.endswith(".png") for k in store.sizes("kill/out/artifacts/")) >= 6

    with open(tmp_path / "killed.log", "wb") as log:
        proc = _cli(store, args, stdout=log, stderr=log)
        kill_when(proc, mid_way)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    left = store.sizes("kill/out/")
    assert "kill/out/manifest.jsonl" not in left  # nothing of it was published
    assert "kill/out/.lock" in left  # the killed run's lock object stays behind

    rerun = _run(store, args)  # takes the dead run's lock over, cleans up, completes
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    got = _check_complete(store, "kill/out")
    assert sorted(r.key for r in got["records"]) == sorted(good)  # each input exactly once
    assert [f["key"] for f in got["failures"]] == list(BAD)
    assert got["summary"]["inputs"] == len(good) + len(BAD)


def test_a_second_run_is_refused_while_the_lock_is_held_and_a_stale_lock_is_taken(
    store, tiny_model
):
    pattern = _upload(store, "lock/in", {"a.png": noise_png(1)})
    out = store.url("lock/out")
    args = _overrides(store, tiny_model, pattern, out)
    with output_lock(out, ttl_s=30, options=_options(store)):
        busy = _run(store, args)
    assert busy.returncode == EXIT_BUSY, busy.stderr[-2000:]
    assert "in use by another run" in busy.stderr and "lock/out/.lock" in busy.stderr
    assert "lock/out/manifest.jsonl" not in store.sizes("lock/out/")
    assert "lock/out/.lock" not in store.sizes("lock/out/")  # released at the end

    # A lock whose lease ran out (another host's run that died) is taken over.
    stale = {"host": "elsewhere", "pid": 1, "owner": "x", "renewed": 0, "expires": 1}
    store.put("lock/out/.lock", json.dumps(stale).encode())
    done = _run(store, args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _check_complete(store, "lock/out")["summary"]["images_written"] == 1


def test_a_run_whose_lock_was_taken_over_knows_it_and_leaves_the_new_lock():
    # S3 only: gcp-storage-emulator ignores generation preconditions (real GCS honours them).
    with SERVERS["s3"]() as s3:
        lock = ObjectLock(s3.url("lost/.lock"), ttl_s=3, options=_options(s3))
        lock.acquire()
        taker = b'{"host": "elsewhere", "pid": 1, "expires": 9999999999}'
        with lock.held():
            lock.verify()  # held
            s3.put("lost/.lock", taker)  # another run took it over while this one slept
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    lock.verify()
                except LockLost:
                    break
                time.sleep(0.1)
            with pytest.raises(LockLost):
                lock.verify()
            with pytest.raises(OutputBusyError, match="nothing was published"):
                _Held(lock).verify()
        assert s3.get("lost/.lock") == taker  # the new holder's lock is not deleted
        second = ObjectLock(s3.url("lost/.lock"), ttl_s=3, options=_options(s3))
        with pytest.raises(LockBusy, match="elsewhere"):
            second.acquire()
