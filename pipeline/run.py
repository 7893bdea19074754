"""Pipeline wiring: build_pipeline(p, config) and run(config, beam_args). Labels only, no maths.

```
ReadImages -> DecodeImages -> RunInference(SaliencyModelHandler) -> SplitResults
   |              |                                                  |-- WriteRecords
   |              |                                                  |-- WriteArtifacts -> manifest
   |              `-- failures --------------------------------------+-- failures.jsonl
   `-- failures -----------------------------------------------------'
counts (inputs, images written, records, failures) -> _counts.json -> summary.json
```
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.config import Config
from pipeline.elements import Failure, SaliencyRecord

_LOG = logging.getLogger(__name__)

# Exit codes of `python -m pipeline run`.
EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_TOO_MANY_FAILURES = 3


class Outputs(NamedTuple):
    records: beam.PCollection
    failures: beam.PCollection
    counts: beam.PCollection


def _split_results(result: PredictionResult):
    """PredictionResult(item, [SaliencyRecord | Failure, ...]) -> tagged outputs."""
    for out in result.inference:
        if isinstance(out, Failure):
            yield beam.pvalue.TaggedOutput("failures", out)
        else:
            yield out


def _count_as(name: str):
    def count(_: Any) -> tuple[str, int]:
        return name, 1

    count.__name__ = f"count_{name}"
    return count


def _image_key(record: SaliencyRecord) -> str:
    return record.key


def _failure_key(failure: Failure) -> str:
    return failure.key


class CountInto(beam.PTransform):
    """(name, number of elements) as a one-element PCollection (zero when empty)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    def expand(self, pcoll):
        return (
            pcoll
            | "Count" >> beam.combiners.Count.Globally()
            | "Name" >> beam.Map(_named_count, self._name)
        )


def _named_count(n: int, name: str) -> tuple[str, int]:
    return name, int(n)


def build_pipeline(p: beam.Pipeline, config: Config) -> Outputs:
    """Add the whole job to pipeline ``p``; returns the main PCollections (for tests)."""
    from pipeline import sinks, sources
    from pipeline.handler import SaliencyModelHandler, model_geometry

    src = config.source
    out_dir = config.output.dir.rstrip("/")
    run_id = config.run_id
    geometry = model_geometry(config.model)
    height, width = geometry.input_size

    read = p | "ReadImages" >> sources.ReadImages(
        kind=src.kind,
        pattern=src.pattern,
        image_key=src.image_key,
        label_key=src.label_key,
        key_key=src.key_key,
        tfds_name=src.tfds_name,
        tfds_split=src.tfds_split,
        tfds_data_dir=src.tfds_data_dir,
        tfds_image_feature=src.tfds_image_feature,
        tfds_label_feature=src.tfds_label_feature,
        limit=src.limit,
    )
    decoded = read.images | "DecodeImages" >> sources.DecodeImages(
        input_size=(height, width),
        channels=geometry.channels,
        resize_policy=src.resize,
        max_pixels=src.max_pixels,
    )
    explained = (
        decoded.items
        | "Explain" >> RunInference(SaliencyModelHandler(config, run_id=run_id))
        | "SplitResults" >> beam.FlatMap(_split_results).with_outputs("failures", main="records")
    )
    records = explained.records
    failures = (
        read.failures,
        decoded.failures,
        explained.failures,
    ) | "AllFailures" >> beam.Flatten()

    if config.output.records:
        _ = records | "WriteRecords" >> sinks.WriteRecords(
            out_dir,
            num_shards=config.output.num_shards,
            include_image=config.output.include_image,
        )
    manifest_rows = records | "Artifacts" >> sinks.WriteArtifacts(
        out_dir,
        methods=config.saliency.methods,
        views=config.output.views if config.output.artifacts else (),
    )
    _ = manifest_rows | "WriteManifest" >> sinks.WriteManifest(out_dir)
    _ = failures | "WriteFailures" >> sinks.WriteFailures(out_dir)

    counts = (
        (
            read.images | "CountInputs" >> CountInto("inputs"),
            read.failures | "CountUnreadable" >> CountInto("unreadable"),
            records | "CountRecords" >> CountInto("records"),
            records
            | "ImageKeys" >> beam.Map(_image_key)
            | "DistinctImages" >> beam.Distinct()
            | "CountImages" >> CountInto("images_written"),
            failures
            | "FailureKeys" >> beam.Map(_failure_key)
            | "DistinctFailures" >> beam.Distinct()
            | "CountFailures" >> CountInto("images_failed"),
        )
        | "AllCounts" >> beam.Flatten()
        | "CountsDict" >> beam.combiners.ToDict()
    )
    _ = counts | "WriteCounts" >> beam.Map(_write_counts, f"{out_dir}/_counts.json")
    return Outputs(records=records, failures=failures, counts=counts)


def _write_counts(counts: dict[str, int], path: str) -> None:
    from pipeline.sinks import write_json

    counts = dict(counts)
    # Unreadable inputs never reached ReadImages' main output; they are inputs all the same.
    counts["inputs"] = counts.get("inputs", 0) + counts.pop("unreadable", 0)
    write_json(path, counts)


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the command line; the local default runs in-process, offline.

    DirectRunner in Beam >= 2.6x first tries the Prism runner, which downloads a binary.
    For 'DirectRunner' (the default) we run the FnApiRunner directly: what DirectRunner
    falls back to for batch pipelines, and it honours --direct_num_workers and
    --direct_running_mode.
    """
    options = PipelineOptions(list(beam_args))
    options.view_as(beam.options.pipeline_options.SetupOptions).save_main_session = False
    return options


def make_runner(options: PipelineOptions):
    """The runner object for the options (FnApiRunner for DirectRunner)."""
    name = options.view_as(StandardOptions).runner
    if name in (None, "DirectRunner", "direct", "FnApiRunner"):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return name  # Dataflow, Flink, Portable, ... resolved by Beam


@dataclasses.dataclass(frozen=True)
class Summary:
    """The run summary printed at the end and saved as summary.json."""

    run_id: str
    output_dir: str
    inputs: int
    images_written: int
    images_failed: int
    records: int
    elapsed_s: float
    images_per_s: float
    failure_fraction: float
    max_failure_fraction: float
    methods: tuple[str, ...]
    model: str
    reconciled: bool

    @property
    def too_many_failures(self) -> bool:
        return self.failure_fraction > self.max_failure_fraction


def run(config: Config, beam_args: Sequence[str] = ()) -> Summary:
    """Run the job to completion; writes summary.json next to the outputs."""
    from pipeline.handler import model_geometry
    from pipeline.sinks import read_json, write_json

    # Fail fast on a model that cannot load, before any data is read.
    model_geometry(config.model)
    options = pipeline_options(beam_args)
    start = time.monotonic()
    p = beam.Pipeline(runner=make_runner(options), options=options)
    build_pipeline(p, config)
    result = p.run()
    result.wait_until_finish()
    elapsed = time.monotonic() - start
    out_dir = config.output.dir.rstrip("/")
    counts = read_json(f"{out_dir}/_counts.json")
    inputs = int(counts.get("inputs", 0))
    written = int(counts.get("images_written", 0))
    failed = int(counts.get("images_failed", 0))
    summary = Summary(
        run_id=config.run_id,
        output_dir=out_dir,
        inputs=inputs,
        images_written=written,
        images_failed=failed,
        records=int(counts.get("records", 0)),
        elapsed_s=round(elapsed, 3),
        images_per_s=round(written / elapsed, 3) if elapsed > 0 else 0.0,
        failure_fraction=round(failed / inputs, 6) if inputs else 0.0,
        max_failure_fraction=config.run.max_failure_fraction,
        methods=config.saliency.methods,
        model=config.model.name,
        reconciled=inputs == written + failed,
    )
    write_json(f"{out_dir}/summary.json", dataclasses.asdict(summary))
    _LOG.info("summary: %s", json.dumps(dataclasses.asdict(summary)))
    return summary
