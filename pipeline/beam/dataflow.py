"""Dataflow: the launcher's checks and the job built offline (Beam's ``--dry_run``).

On Dataflow the workers run the image given by ``--sdk_container_image``; its Beam and
Python must be the launcher's, or the job fails on the workers after the GPUs are up. An
image cannot be inspected offline, so its tag must state them: ``worker:beam2.77.0-py3.11``
(pipeline/versions.py's WORKER_TAG) or Beam's own ``apache/beam_python3.11_sdk:2.77.0``.

:func:`describe` builds the whole job with ``--dry_run`` (nothing is staged, submitted or
read) and returns what matters of it: the worker image, machine type, accelerator, one SDK
process per VM, and that the graph translated.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
    WorkerOptions,
)

from pipeline.beam.run import build_pipeline
from pipeline.config import Config
from pipeline.config.checks import ConfigError
from pipeline.versions import WORKER_TAG

_OURS = re.compile(r"beam(?P<beam>\d+\.\d+\.\d+)-py(?P<py>\d+\.\d+)")
_BEAMS = re.compile(r"beam_python(?P<py>\d+\.\d+)_sdk:(?P<beam>\d+\.\d+\.\d+)")
ONE_SDK_PROCESS = "no_use_multiple_sdk_containers"


def is_dataflow(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner or ""
    return runner.rsplit(".", 1)[-1].lower() in ("dataflowrunner", "dataflow")


def is_dry_run(options: PipelineOptions) -> bool:
    return bool(options.view_as(TestOptions).dry_run)


def image_versions(image: str) -> tuple[str, str] | None:
    """(Beam, Python) a worker image's tag states, or None."""
    tag = image.split("@", 1)[0].rsplit("/", 1)[-1]
    found = _BEAMS.search(tag) or (_OURS.search(tag.split(":", 1)[1]) if ":" in tag else None)
    return (found["beam"], found["py"]) if found else None


def container_problem(
    image: str | None, *, beam_version: str = beam.__version__, python: str | None = None
) -> str | None:
    """Why the launcher refuses ``--sdk_container_image`` (None: it matches)."""
    python = python or f"{sys.version_info[0]}.{sys.version_info[1]}"
    ours = f"beam{beam_version}-py{python}"
    build = f"build the worker image from the Dockerfile and tag it :{ours}"
    if not image:
        return (
            "--sdk_container_image is not set: Dataflow's default image has no TensorFlow "
            f"and not this package. Fix: {build}, push it and pass it (or set "
            "beam.sdk_container_image in the config)."
        )
    versions = image_versions(image)
    if versions is None:
        return (
            f"--sdk_container_image={image}: its tag does not say which Beam and Python it "
            f"holds, and Dataflow fails a job whose workers differ from the launcher (Beam "
            f"{beam_version}, Python {python}). Fix: {build} (e.g. worker:{WORKER_TAG})."
        )
    if versions != (beam_version, python):
        return (
            f"--sdk_container_image={image} holds Beam {versions[0]} and Python "
            f"{versions[1]}, this launcher Beam {beam_version} and Python {python}; on "
            f"Dataflow they must match. Fix: {build}, or launch from a matching venv."
        )
    return None


def dataflow_problems(options: PipelineOptions) -> list[str]:
    """The launcher's refusals for a Dataflow job ([] when it may be built)."""
    image = options.view_as(WorkerOptions).sdk_container_image
    problem = container_problem(image)
    return [problem] if problem else []


def describe(config: Config, beam_args: Sequence[str]) -> dict:
    """Build the Dataflow job for ``config`` offline (``--dry_run`` is added) and describe
    it. Nothing is staged, submitted, read or written."""
    from apache_beam.runners.dataflow.internal import apiclient

    options = PipelineOptions([*config.beam.flags(beam_args), "--dry_run=True"])
    try:
        p = beam.Pipeline(options=options)
        build_pipeline(p, config)
    except ValueError as exc:  # Beam's option validation, e.g. a placeholder project id
        raise ConfigError(
            " ".join(str(exc).split()) + " Fix: give the real values of the placeholders in "
            "the beam: section, e.g. --set beam.project=my-project --set "
            "beam.temp_location=gs://my-bucket/tmp"
        ) from exc
    job = p.run().job
    environment = apiclient.Environment(
        packages=[],
        options=job.options,
        environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
        proto_pipeline_staged_url="(dry run: not staged)",
        proto_pipeline=job.proto_pipeline,
    ).proto
    pool = environment.worker_pools[0]
    images = list(pool.sdk_harness_container_images)
    transforms = job.proto_pipeline.components.transforms.values()
    top = sorted({t.unique_name.split("/", 1)[0] for t in transforms if t.unique_name})
    experiments = list(environment.experiments)
    return {
        "project": options.view_as(GoogleCloudOptions).project,
        "region": options.view_as(GoogleCloudOptions).region,
        "machine_type": pool.machine_type,
        "max_num_workers": pool.autoscaling_settings.max_num_workers,
        "threads_per_worker": pool.num_threads_per_worker,
        "container_images": [c.container_image for c in images],
        "one_sdk_process_per_vm": ONE_SDK_PROCESS in experiments
        and all(c.use_single_core_per_container for c in images),
        "service_options": list(environment.service_options),
        "experiments": experiments,
        "resource_hints": {
            k: {h: v.decode() for h, v in e.resource_hints.items()}
            for k, e in job.proto_pipeline.components.environments.items()
            if e.resource_hints
        },
        "transforms": len(job.proto_pipeline.components.transforms),
        "top_level_transforms": top,
    }
