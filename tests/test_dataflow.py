"""Dataflow as far as offline allows: the job of configs/dataflow_gpu.yaml built with
Beam's --dry_run (nothing staged or submitted) against the GCS emulator; the launcher's
refusal of a worker image whose Beam or Python differs; the versions stated once; the
Flex Template's parameters reaching the same job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import apache_beam as beam
import pytest

from pipeline import versions
from pipeline.beam.dataflow import container_problem, image_versions
from pipeline.cli import EXIT_CONFIG
from pipeline.testing.processes import run_cli
from pipeline.testing.stores import gcs_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "dataflow_gpu.yaml")
sys.path.insert(0, os.path.join(ROOT, "examples", "flex_template"))
import main as flex_main  # noqa: E402 - the Flex Template's entry point

IMAGE = f"us-central1-docker.pkg.dev/saliency-ci/saliency/worker:{versions.WORKER_TAG}"


@pytest.fixture(scope="module")
def gcs():
    with gcs_server() as store:
        for i, name in enumerate(("a.png", "b.png")):
            store.put(f"in/{name}", _png(i))
        yield store


def _png(seed: int) -> bytes:
    from pipeline.testing.reliability import noise_png

    return noise_png(seed)


def _sets(gcs, *extra: str) -> list[str]:
    sets = [
        "model.name=examples/model/shapes_cnn.keras",  # no ImageNet download offline
        "model.preprocessing=unit",
        f"source.pattern={gcs.url('in/*')}",
        f"output.dir={gcs.url('dataflow/out')}",
        "beam.project=saliency-ci",
        f"beam.temp_location={gcs.url('dataflow/tmp')}",
        f"beam.sdk_container_image={IMAGE}",
        "beam.no_auth=true",
        *extra,
    ]
    return [a for s in sets for a in ("--set", s)]


def _cli(gcs, *args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, extra_env=gcs.env, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--dry-run", "--dry_run=True"])
def test_dataflow_job_of_the_gpu_config_builds_offline(gcs, flag):
    proc = _cli(gcs, "run", "--config", CONFIG, *_sets(gcs), flag, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = json.loads(proc.stdout)
    assert job["container_images"] == [IMAGE]
    assert job["machine_type"] == "g2-standard-8"
    assert job["service_options"] == [
        "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
    ]
    assert job["one_sdk_process_per_vm"] is True
    assert "no_use_multiple_sdk_containers" in job["experiments"]
    assert (job["max_num_workers"], job["threads_per_worker"]) == (8, 2)
    assert (job["project"], job["region"]) == ("saliency-ci", "us-central1")
    # The whole graph translated: every stage of the job, down to Beam's primitives.
    stages = {"ReadImages", "ExplainImages", "WriteRecords", "AuditRows", "Artifacts",
              "WriteManifest", "WriteFailures", "WriteCounts"}  # fmt: skip
    assert stages <= set(job["top_level_transforms"])
    assert job["transforms"] > 100
    assert gcs.sizes("dataflow/") == {}  # nothing staged, locked or written


@pytest.mark.slow
def test_launcher_refuses_a_worker_image_of_another_beam_or_python(gcs):
    for tag, why in (
        ("beam2.76.0-py3.11", "holds Beam 2.76.0 and Python 3.11"),
        (f"beam{beam.__version__}-py3.12", "Python 3.12"),
        ("latest", "does not say which Beam and Python"),
    ):
        image = IMAGE.rsplit(":", 1)[0] + ":" + tag
        sets = _sets(gcs, f"beam.sdk_container_image={image}")
        proc = _cli(gcs, "run", "--config", CONFIG, *sets, "--dry-run")
        assert proc.returncode == EXIT_CONFIG, proc.stderr[-2000:]
        assert why in proc.stderr and "Fix: build the worker image" in proc.stderr


def test_image_tags_state_beam_and_python():
    assert image_versions(IMAGE) == (versions.BEAM_VERSION, versions.PYTHON_VERSION)
    assert image_versions("apache/beam_python3.11_sdk:2.77.0") == ("2.77.0", "3.11")
    assert image_versions("r/worker:beam2.77.0-py3.11@sha256:" + "0" * 64) == ("2.77.0", "3.11")
    assert image_versions("r/worker@sha256:" + "0" * 64) is None
    assert container_problem(IMAGE) is None
    assert "is not set" in container_problem(None)
    mismatch = container_problem(IMAGE, beam_version="2.78.0")
    assert "this launcher Beam 2.78.0" in mismatch


def test_beam_and_python_are_stated_once():
    assert beam.__version__ == versions.BEAM_VERSION  # setup.py pins the launcher to it
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" == versions.PYTHON_VERSION
    with open(os.path.join(ROOT, "Dockerfile"), encoding="utf-8") as handle:
        docker = handle.read()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", docker, re.M))
    assert args == {
        "PYTHON_VERSION": versions.PYTHON_VERSION,
        "BEAM_VERSION": versions.BEAM_VERSION,
    }
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as handle:
        setup = handle.read()
    assert "pipeline/versions.py" in setup and 'f"apache-beam=={BEAM}"' in setup
    assert not re.search(r"apache-beam[^\"]*[<>=]=?\d", setup)  # no second spelling
    flex = os.path.join(ROOT, "examples", "flex_template", "Dockerfile")
    with open(flex, encoding="utf-8") as handle:
        launcher = handle.read()
    assert f"python{versions.PYTHON_VERSION.replace('.', '')}-template-launcher" in launcher
    with open(CONFIG, encoding="utf-8") as handle:
        assert f":{versions.WORKER_TAG}" in handle.read()


@pytest.mark.slow
def test_flex_template_parameters_start_the_same_job(gcs):
    with open(os.path.join(ROOT, "examples", "flex_template", "metadata.json")) as handle:
        metadata = json.load(handle)
    params = {p["name"]: p for p in metadata["parameters"]}
    assert set(params) == {"config", "set"} and metadata["sdkInfo"]["language"] == "PYTHON"
    values = {
        "config": "configs/dataflow_gpu.yaml",
        "set": ";".join(a for a in _sets(gcs) if a != "--set"),
    }
    for name, value in values.items():  # what the Dataflow launch form accepts
        assert all(re.match(rx, value) for rx in params[name]["regexes"]), name
    # The launcher runs main.py with --NAME=VALUE per parameter, plus Beam's options.
    argv = [f"--{k}={v}" for k, v in values.items()] + ["--dry_run=True"]
    args = flex_main.cli_args(argv)
    assert args[:3] == ["run", "--config", "configs/dataflow_gpu.yaml"]
    proc = _cli(gcs, *args, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["container_images"] == [IMAGE]


def test_flink_config_names_the_job_server_of_the_pinned_beam():
    from apache_beam.options.pipeline_options import FlinkRunnerOptions

    with open(os.path.join(ROOT, "configs", "flink.yaml"), encoding="utf-8") as handle:
        text = handle.read()
    image = re.search(r"apache/beam_flink(\d+\.\d+)_job_server:(\S+)", text)
    jar = re.search(r"beam-runners-flink-(\d+\.\d+)-job-server:(\S+)", text)
    assert image and jar and image.groups() == jar.groups()
    flink, beam_version = image.groups()
    assert beam_version == versions.BEAM_VERSION
    assert flink in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
    assert f"Flink {flink}." in text.replace("\n#", "")


@pytest.mark.slow
def test_a_placeholder_project_is_a_config_error_with_the_fix(gcs):
    sets = _sets(gcs, "beam.project=YOUR_PROJECT")
    proc = _cli(gcs, "run", "--config", CONFIG, *sets, "--dry_run=True")
    assert proc.returncode == EXIT_CONFIG, proc.stderr[-2000:]
    assert "Invalid Project ID (YOUR_PROJECT)" in proc.stderr
    assert "--set beam.project=" in proc.stderr and "Traceback" not in proc.stderr
