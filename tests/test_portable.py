"""The portable topology that Flink uses, run here: Beam's job service
(local_job_service_main) and two external SDK worker pools (worker_pool_main, what the
worker image's ``--worker_pool`` starts), all on 127.0.0.1. The unchanged job runs with
``--runner=PortableRunner --environment_type=EXTERNAL`` on each pool; its records,
manifest, failures and artifacts equal the DirectRunner's byte for byte."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import subprocess
import sys

import pytest

from pipeline.store import records
from pipeline.testing.processes import run_cli
from pipeline.testing.reliability import noise_png, same_json, save_tiny_model, write_files
from pipeline.testing.stores import _wait_for, free_port

pytestmark = pytest.mark.slow  # Beam's job service and worker pools

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env() -> dict[str, str]:
    # A worker pool starts each SDK worker as `python -c ...` (the image's python): here,
    # this venv's.
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PATH=path)


@contextlib.contextmanager
def _server(module: str, port_flag: str, log: str):
    port = free_port()
    with open(log, "wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, f"{port_flag}={port}"],
            cwd=ROOT, env=_env(), stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            _wait_for(port, proc, module)
            yield port
        finally:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def topology(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    with (
        _server("apache_beam.runners.portability.local_job_service_main", "--port",
                str(logs / "job_service.log")) as job,
        _server("apache_beam.runners.worker.worker_pool_main", "--service_port",
                str(logs / "pool_a.log")) as pool_a,
        _server("apache_beam.runners.worker.worker_pool_main", "--service_port",
                str(logs / "pool_b.log")) as pool_b,
    ):  # fmt: skip
        yield job, (pool_a, pool_b), logs


def _run(config: str, out: str, *beam: str) -> None:
    proc = run_cli(
        "run", "-q", "--config", config, "--set", f"output.dir={out}", *beam, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _records(out: str) -> list[bytes]:
    # Sorted: shards split the records by bundle, which differs by runner.
    paths = glob.glob(os.path.join(out, "records", "*.tfrecord"))
    return sorted(raw for path in paths for raw in records.read_raw(path))


def _manifest(out: str) -> bytes:
    with open(os.path.join(out, "manifest.jsonl"), "rb") as handle:
        text = handle.read()
    shard_sets = {json.loads(line)["shard_set"] for line in text.splitlines()}
    (shard_set,) = shard_sets  # one run: one shard set id, random by design
    return text.replace(shard_set.encode(), b"SHARD_SET")


def _bytes(out: str, name: str) -> bytes:
    with open(os.path.join(out, name), "rb") as handle:
        return handle.read()


def _files(out: str, sub: str) -> dict[str, bytes]:
    found = {}
    for path in glob.glob(os.path.join(out, sub, "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                found[os.path.relpath(path, out)] = handle.read()
    return found


def _audit(out: str) -> dict:
    with open(os.path.join(out, "audit", "audit.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _lines(out: str) -> list[bytes]:
    paths = glob.glob(os.path.join(out, "audit_rows", "*.tfrecord"))
    return sorted(raw for path in paths for raw in records.read_raw(path))


def test_portable_runner_on_external_worker_pools_equals_direct_runner(topology, tmp_path):
    job, pools, logs = topology
    images = {f"img_{i}.png": noise_png(i) for i in range(8)}
    write_files(str(tmp_path / "in"), {**images, "cut.png": noise_png(9)[:60]})
    model = save_tiny_model(str(tmp_path / "tiny.keras"))
    config = tmp_path / "job.yaml"
    config.write_text(
        f"model: {{name: '{model}', preprocessing: unit}}\n"
        f"source: {{pattern: '{tmp_path}/in/*'}}\n"
        "saliency: {methods: [vanilla, guided, smoothgrad], samples: 4, precision: float32}\n"
        "batch: {max_batch_size: 3}\n"
        "output: {views: [heatmap, grid], num_shards: 2}\n"
        "run: {progress_every: 0}\n"
        "audit: {enabled: true, sanity_samples: 2, faithfulness_fraction: 0.5}\n"
    )
    direct = str(tmp_path / "direct")
    _run(str(config), direct)
    outs = []
    for i, (pool, workers) in enumerate(zip(pools, (2, 1), strict=True)):
        out = str(tmp_path / f"portable_{i}")
        _run(
            str(config), out, "--runner=PortableRunner", f"--job_endpoint=localhost:{job}",
            "--environment_type=EXTERNAL", f"--environment_config=localhost:{pool}",
            f"--direct_num_workers={workers}",
        )  # fmt: skip
        outs.append(out)
    for name in ("pool_a.log", "pool_b.log"):  # each pool started the SDK workers of a job
        assert "Starting worker" in (logs / name).read_text(), name
    expected = _records(direct)
    assert len(expected) == 8
    for out in outs:
        assert _records(out) == expected
        assert _manifest(out) == _manifest(direct)
        assert _files(out, "artifacts") == _files(direct, "artifacts") != {}
        for name in ("failures.jsonl",):
            with (
                open(os.path.join(out, name), "rb") as a,
                open(os.path.join(direct, name), "rb") as b,
            ):
                assert a.read() == b.read()
        with open(os.path.join(out, "summary.json"), encoding="utf-8") as handle:
            summary = json.load(handle)
        assert (summary["images_written"], summary["images_failed"]) == (8, 1)
        # The audit ran on the portable runner too (row lines written by the job's
        # workers, aggregated and the sanity check run by the audit's): the same audit.
        same_json(_audit(out), _audit(direct))
        assert _lines(out) == _lines(direct) and len(_lines(direct)) == 8
