"""Crash safety: a run killed at any moment, then run again, ends complete and exact.

Fault injection with a real process: `python -m pipeline run` over 40 images plus bad
files is killed with SIGKILL while it writes, then run again to completion; every input is
accounted for exactly once and every output file is readable. The publish step (after the
pipeline) is cut at each of its steps in-process, then rerun.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time

import pytest
from PIL import Image

from pipeline.beam import run as run_module
from pipeline.beam.run import run
from pipeline.config.files import load_config
from pipeline.store import files as outputs
from pipeline.store import publish
from pipeline.testing.processes import start_cli
from pipeline.testing.reliability import (
    base_overrides,
    check_complete,
    committed_row_ids,
    noise_png,
    read_records,
    write_files,
)

pytestmark = pytest.mark.slow  # real runs killed and rerun

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = [f"img_{i:02d}.png" for i in range(40)]
BAD = {"empty.jpg": b"", "page.png": b"<html>404</html>", "cut.png": noise_png(99)[:60]}


def _bucket(root: str, n: int = len(GOOD)) -> str:
    files = {name: noise_png(i) for i, name in enumerate(GOOD[:n])}
    write_files(root, {**files, **BAD})
    return root


def _cli_run(config: str, stdout, stderr) -> subprocess.Popen:
    return start_cli(["run", "--config", config, "-q"], stdout=stdout, stderr=stderr)


def _visible_pngs_are_whole(out: str) -> int:
    """What a reader polling the output sees while the run writes: only whole PNGs."""
    n = 0
    for dirpath, _, files in os.walk(os.path.join(out, "artifacts")):
        for name in files:
            assert ".tmp-" not in name, name
            with Image.open(os.path.join(dirpath, name)) as img:
                img.load()
            n += 1
    return n


def test_sigkill_mid_run_then_rerun_accounts_for_every_input_once(tmp_path, tiny_model):
    bucket = _bucket(str(tmp_path / "bucket"))
    out = str(tmp_path / "out")
    config = tmp_path / "audit.yaml"
    config.write_text(
        f"model: {{name: '{tiny_model}', preprocessing: unit}}\n"
        f"source: {{pattern: '{bucket}/*'}}\n"
        "saliency: {methods: [smoothgrad], samples: 1000, sample_batch_size: 100,"
        " precision: float32}\n"
        "batch: {max_batch_size: 2}\n"
        f"output: {{dir: '{out}', views: [heatmap, grid]}}\n"
        "run: {progress_every: 0}\n"
    )
    with open(tmp_path / "killed.log", "wb") as log:
        proc = _cli_run(str(config), log, log)
        deadline = time.monotonic() + 120
        written = 0
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                written = _visible_pngs_are_whole(out)
                if written >= 10:  # mid-way: some artifacts are out, most are not
                    break
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    assert 10 <= written < 2 * len(GOOD)
    # Nothing of the killed attempt is visible to a records or manifest reader.
    assert read_records(out) == []
    assert not os.path.exists(os.path.join(out, "manifest.jsonl"))
    assert os.listdir(os.path.join(out, ".staging"))  # its leftovers are hidden there

    with open(tmp_path / "rerun.log", "wb") as log:
        rerun = _cli_run(str(config), log, log)
        assert rerun.wait(timeout=300) == 0, (tmp_path / "rerun.log").read_text()[-3000:]

    got = check_complete(out)
    keys = [r.key for r in got["records"]]
    assert sorted(keys) == sorted(GOOD)  # each good input exactly once
    assert sorted(f["key"] for f in got["failures"]) == sorted(BAD)  # each bad one once
    assert {f["key"]: f["stage"] for f in got["failures"]} == dict.fromkeys(BAD, "decode")
    summary = got["summary"]
    assert summary["inputs"] == len(GOOD) + len(BAD)
    assert (summary["images_written"], summary["images_failed"]) == (len(GOOD), len(BAD))
    assert summary["reconciled"] is True
    for row in got["manifest"]:
        assert set(row["artifacts"]["smoothgrad"]) == {"heatmap", "grid"}
    # Every artifact on disk is one the manifest lists: the killed run's PNGs were
    # rewritten in place (same paths, same bytes), not duplicated.
    assert _visible_pngs_are_whole(out) == 2 * len(GOOD)

    # A rerun with another shard count replaces the shards: still each record once.
    config_3 = load_config(str(config), ["output.num_shards=3", "saliency.samples=4"])
    summary_3 = run(config_3)
    assert summary_3.images_written == len(GOOD)
    got = check_complete(out)
    assert sorted(r.key for r in got["records"]) == sorted(GOOD)
    names = os.listdir(os.path.join(out, "records"))
    assert len(names) == 3 and all(summary_3.shard_set in n for n in names)


class _Killed(BaseException):
    """Stands for SIGKILL inside publish (a BaseException: nothing catches it)."""


def _crash_at(monkeypatch, out: str, name: str) -> None:
    """Make publish die when it is about to replace ``out/name``."""
    real = outputs.write_atomic
    target = os.path.join(out, name)

    def write_atomic(path, data, **kwargs):
        if os.path.abspath(path) == os.path.abspath(target):
            raise _Killed(path)
        return real(path, data, **kwargs)

    monkeypatch.setattr(outputs, "write_atomic", write_atomic)  # write_sorted_jsonl's
    monkeypatch.setattr(publish, "write_atomic", write_atomic)  # publish's own writes


@pytest.mark.parametrize(
    ("incremental", "crash_before"),
    [
        (False, "manifest.jsonl"),  # shards renamed into records/, manifest not yet replaced
        (False, "failures.jsonl"),  # manifest replaced, old shards not yet deleted
        (True, "manifest.jsonl"),
    ],
)
def test_publish_cut_at_any_step_then_rerun_is_exact(
    tmp_path, tiny_model, monkeypatch, incremental, crash_before
):
    bucket = _bucket(str(tmp_path / "bucket"), n=6)
    out = str(tmp_path / "out")
    extra = [f"run.incremental={str(incremental).lower()}", "run.max_failure_fraction=0.5"]
    first = load_config(None, [*base_overrides(tiny_model, f"{bucket}/*", out), *extra])
    run(first)
    before = check_complete(out)
    assert sorted(r.key for r in before["records"]) == GOOD[:6]

    # Next run: two more images, another shard count; it dies inside publish.
    write_files(bucket, {GOOD[6]: noise_png(6), GOOD[7]: noise_png(7)})
    second = load_config(
        None, [*base_overrides(tiny_model, f"{bucket}/*", out), *extra, "output.num_shards=2"]
    )
    with monkeypatch.context() as patch:
        _crash_at(patch, out, crash_before)
        with pytest.raises(_Killed):
            run(second)
    # The committed manifest is whole: the old one or the new one, never a mix.
    rows = outputs.read_jsonl(os.path.join(out, "manifest.jsonl"))
    new_committed = crash_before == "failures.jsonl"
    assert len(rows) == (8 if new_committed else 6)

    summary = run(second)
    got = check_complete(out)
    assert sorted(r.key for r in got["records"]) == GOOD[:8]
    assert sorted(f["key"] for f in got["failures"]) == sorted(BAD)
    assert summary.reconciled
    if incremental:  # the uncommitted attempt's two images were done again, not skipped
        assert (summary.images_written, summary.images_skipped) == (2, 6)


# publish's file-system mutations, in the order it may call them (each a kill point)
_MUTATIONS = ("sync_filesystem", "rename", "fsync_dir", "write_sorted_jsonl", "write_atomic",
              "delete_files", "delete_tree")  # fmt: skip


def _die_before(monkeypatch, step: int) -> list[str]:
    """Make publish die just before its ``step``-th mutation (1-based); returns the
    mutations called so far (fewer than ``step``: publish finished)."""
    calls: list[str] = []

    def dying(name: str, real):
        def mutation(*args, **kwargs):
            calls.append(name)
            if len(calls) == step:
                raise _Killed(name)
            return real(*args, **kwargs)

        return mutation

    for name in _MUTATIONS:
        monkeypatch.setattr(publish, name, dying(name, getattr(publish, name)))
    return calls


def _committed_view_is_exact(out: str) -> list[dict]:
    """What a reader sees is exactly the committed manifest: each record once, the content
    the manifest row names, whatever else records/ holds at that moment."""
    rows = outputs.read_jsonl(os.path.join(out, "manifest.jsonl"))
    recs = read_records(out)
    assert sorted(r.record_id for r in recs) == sorted(row["record_id"] for row in rows)
    assert committed_row_ids(out) == sorted(row["record_id"] for row in rows)  # audit rows
    sha = {row["record_id"]: row["sha256"] for row in rows}
    assert all(r.sha256 == sha[r.record_id] for r in recs)
    return rows


@pytest.mark.slow
def test_kill_before_each_step_of_publish_then_rerun(tmp_path, tiny_model, monkeypatch):
    """An incremental publish with new images, a changed one (its old shard set rewritten)
    and another shard count, killed before each of its file-system steps in turn: readers
    see the old or the new committed records, each once; a rerun ends exact."""
    bucket = _bucket(str(tmp_path / "bucket"), n=6)
    out, snapshot = str(tmp_path / "out"), str(tmp_path / "snapshot")
    extra = ["run.incremental=true", "run.max_failure_fraction=0.5", "output.num_shards=1",
             "audit.enabled=true"]  # fmt: skip
    run(load_config(None, [*base_overrides(tiny_model, f"{bucket}/*", out), *extra]))
    old = _committed_view_is_exact(out)
    assert len(committed_row_ids(out)) == len(old) == 6
    write_files(bucket, {GOOD[6]: noise_png(6), GOOD[7]: noise_png(7), GOOD[0]: noise_png(100)})
    second = load_config(
        None, [*base_overrides(tiny_model, f"{bucket}/*", out), *extra, "output.num_shards=2"]
    )
    captured: dict = {}
    real_publish = publish.publish

    def capture(output_dir, **kwargs):  # the state publish starts from, kept aside
        shutil.copytree(output_dir, snapshot, symlinks=True)
        captured.update(kwargs)
        return real_publish(output_dir, **kwargs)

    monkeypatch.setattr(run_module, "publish", capture)
    run(second)
    monkeypatch.setattr(run_module, "publish", real_publish)
    new = _committed_view_is_exact(out)
    assert captured["fsync"] is True and len(new) == 8

    step, seen = 0, []
    while True:
        step += 1
        shutil.rmtree(out)
        shutil.copytree(snapshot, out, symlinks=True)
        with monkeypatch.context() as patch:
            calls = _die_before(patch, step)
            with contextlib.suppress(_Killed):
                publish.publish(out, **captured)
        if len(calls) < step:
            break  # publish ran to its end: every step was cut once
        seen.append(calls[-1])
        rows = _committed_view_is_exact(out)
        assert [r["record_id"] for r in rows] in ([r["record_id"] for r in old],
                                                  [r["record_id"] for r in new])  # fmt: skip
        summary = run(second)
        got = check_complete(out)
        assert sorted(r.key for r in got["records"]) == GOOD[:8]
        changed = next(r for r in got["records"] if r.key == GOOD[0])
        assert changed.sha256 == hashlib.sha256(noise_png(100)).hexdigest()
        assert summary.reconciled
    # the compaction's rename, the shard renames, their directory sync, the manifest
    # (the commit), failures, the stale-shard deletion and the staging removal
    assert {"sync_filesystem", "rename", "fsync_dir", "write_sorted_jsonl", "write_atomic",
            "delete_files", "delete_tree"} <= set(seen), seen  # fmt: skip
    assert seen.count("rename") >= 3
