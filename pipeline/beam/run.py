"""Pipeline wiring: build_pipeline(p, config) and run(config, beam_args). Labels only, no maths.

```
ReadImages -> [SkipDone] -> DecodeImages -> RunInference -> SplitResults -> GuardFinite
   |              |              |                              |               |-- WriteRecords
   |              |              |                              |               |-- [AuditRows]
   |              |              |                              |               `-- WriteArtifacts
   |              |              |                              |                    -> manifest
   |              |              `-- failures ------------------+---------------+-- failures.jsonl
   `-- failures --+-- skipped (incremental: counted only)
counts (inputs, skipped, written, failed, records, recomputed) -> counts.json -> summary.json
```

``run`` wraps the pipeline in the crash-safe protocol of :mod:`pipeline.store.publish`: lock the
output dir, recover_output (remove what a killed run left), write the attempt's records,
manifest, failures and counts under ``.staging/<shard set>/``, and publish them once the
pipeline succeeded. Artifacts are written in place (atomically, idempotent paths).
"""

import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
)
from apache_beam.runners.runner import PipelineState

from pipeline.audit.job_stage import AuditRows
from pipeline.beam import sinks
from pipeline.beam.prepare import SkipDone
from pipeline.beam.progress import REPORTER, ReportProgress
from pipeline.beam.sources import ReadImages
from pipeline.beam.summary import Summary, summarise
from pipeline.beam.transforms import ExplainImages
from pipeline.config import Config
from pipeline.config.checks import ConfigError
from pipeline.elements import Failure, SaliencyRecord
from pipeline.engine.model_geometry import check_methods, model_geometry, model_notes
from pipeline.runners import LOCAL_RUNNERS, make_runner
from pipeline.store.class_names import configured_class_names, folder_class_names
from pipeline.store.files import done_token, is_local, read_json, write_done_index, write_json
from pipeline.store.index import write_index
from pipeline.store.layout import SUMMARY_NAME, counts_path, done_index_path, join_path, tmp_dir
from pipeline.store.layout import staging_dir as staging_path
from pipeline.store.listing import list_pattern, normalise_pattern, split_patterns
from pipeline.store.manifest import read_manifest
from pipeline.store.object_stores import configure
from pipeline.store.publish import (
    new_shard_set,
    output_lock,
    publish,
    recover_output,
    remove_empty_output,
)

_LOG = logging.getLogger(__name__)


class Outputs(NamedTuple):
    records: beam.PCollection
    failures: beam.PCollection
    counts: beam.PCollection


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


def settings_fingerprint(config: Config) -> str:
    """Hash of the settings that change what is computed for an image, beyond the model's
    own fingerprint: the model section, the saliency section, how inputs are resized and
    labelled, and what is written per image. Not: where inputs come from or go to, batch
    sizes, run policy. Incremental runs skip images done with the same value."""
    data = config.to_dict()
    source_keys = ("resize", "label_key", "tfds_label_feature")
    output_keys = ("records", "artifacts", "views", "include_image", "min_artifact_size")
    chosen = {
        "model": data["model"],
        "saliency": data["saliency"],
        "source": {k: data["source"][k] for k in source_keys},
        "output": {k: data["output"][k] for k in output_keys},
    }
    text = json.dumps(chosen, sort_keys=True).encode("utf-8")
    return hashlib.sha256(text).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One run attempt: its shard set id, where it stages, how its rows are stamped."""

    output_dir: str
    shard_set: str
    settings: str
    incremental: bool = False

    @property
    def staging(self) -> str:
        return staging_path(self.output_dir, self.shard_set)

    @property
    def done_index(self) -> str:
        return done_index_path(self.staging)


def new_attempt(config: Config) -> Attempt:
    """A fresh attempt for ``config`` (a new shard set id)."""
    return Attempt(
        output_dir=config.output.dir.rstrip("/"),
        shard_set=new_shard_set(),
        settings=settings_fingerprint(config),
        incremental=config.run.incremental,
    )


def _stamp_row(row: dict, shard_set: str, settings: str) -> dict:
    return {**row, "shard_set": shard_set, "settings": settings}


def _recomputed(record: SaliencyRecord) -> int:
    return int(record.recomputed)


def build_pipeline(p: beam.Pipeline, config: Config, *, attempt: Attempt | None = None) -> Outputs:
    """Add the whole job to pipeline ``p``; returns the main PCollections (for tests).

    Records, manifest rows, failures and counts go to ``attempt.staging`` (default: a new
    attempt); run() publishes them. Artifacts go to their final paths.
    """
    src = config.source
    out_dir = config.output.dir.rstrip("/")
    attempt = attempt or new_attempt(config)
    staging = attempt.staging
    run_id = config.run_id
    read = p | "ReadImages" >> ReadImages(
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
        labels=src.labels,
    )
    images = read.images
    counted: list[Any] = []
    if attempt.incremental:
        todo = images | "SkipDone" >> SkipDone(attempt.done_index)
        images = todo.images
        counted.append(todo.skipped | "CountSkipped" >> CountInto("skipped"))
        _ = todo.skipped | "ProgressSkipped" >> ReportProgress("skipped")
    explained = images | "ExplainImages" >> ExplainImages(
        model=config.model,
        saliency=config.saliency,
        batch=config.batch,
        resize=src.resize,
        max_pixels=src.max_pixels,
        run_id=run_id,
        progress_every=config.run.progress_every,
        faithfulness_steps=config.audit.faithfulness,
        faithfulness_baseline=config.audit.faithfulness_baseline,
        faithfulness_fraction=config.audit.faithfulness_fraction,
        audit_features=config.audit.enabled,
    )
    records = explained.records
    failures = (read.failures, explained.failures) | "AllFailures" >> beam.Flatten()
    _ = failures | "ProgressFailed" >> ReportProgress("failed")

    if config.output.records:
        _ = records | "WriteRecords" >> sinks.WriteRecords(
            staging,
            num_shards=config.output.num_shards,
            include_image=config.output.include_image,
            gradient_encoding=config.output.gradient_encoding,
        )
        if config.audit.enabled:  # the audit's per-record work, where the maps are
            _ = records | "AuditRows" >> AuditRows(
                staging, config, num_shards=config.output.num_shards
            )
    manifest_rows = (
        records
        | "Artifacts"
        >> sinks.WriteArtifacts(
            out_dir,
            methods=config.saliency.methods,
            views=config.output.views if config.output.artifacts else (),
            tmp_dir=tmp_dir(staging),
            min_artifact_size=config.output.min_artifact_size,
        )
        | "StampRows" >> beam.Map(_stamp_row, attempt.shard_set, attempt.settings)
    )
    _ = manifest_rows | "WriteManifest" >> sinks.WriteManifest(staging)
    _ = failures | "WriteFailures" >> sinks.WriteFailures(staging)

    counts = (
        (
            *counted,
            read.images | "CountInputs" >> CountInto("inputs"),
            read.failures | "CountUnreadable" >> CountInto("unreadable"),
            records | "CountRecords" >> CountInto("records"),
            records
            | "Recomputed" >> beam.Map(_recomputed)
            | "SumRecomputed" >> beam.CombineGlobally(sum)
            | "NameRecomputed" >> beam.Map(_named_count, "maps_recomputed"),
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
    _ = counts | "WriteCounts" >> beam.Map(_write_counts, counts_path(staging))
    return Outputs(records=records, failures=failures, counts=counts)


def _write_counts(counts: dict[str, int], path: str) -> None:
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
    options.view_as(SetupOptions).save_main_session = False
    return options


def _carried_rows(output_dir: str, model_fingerprint: str, settings: str) -> list[dict]:
    """Committed manifest rows an incremental run keeps: same model and settings."""
    return [
        row
        for row in read_manifest(output_dir)
        if row.get("model_fingerprint") == model_fingerprint
        and row.get("settings") == settings
        and row.get("shard_set")
    ]


def run(
    config: Config, beam_args: Sequence[str] = (), *, progress_bar: bool | None = None
) -> Summary:
    """Run the job to completion and publish its outputs; writes summary.json.

    Raises engine.geometry.ModelLoadError before anything is read or written when the model does
    not load, ConfigError when the source cannot be listed (e.g. a pattern matching no
    image), store.publish.OutputBusyError when another run holds the output dir.
    ``progress_bar``: a bar on stderr for an in-process run (None: when stderr is a
    terminal); otherwise progress lines every ``run.progress_every`` images.
    """
    # Fail fast on a model that cannot load, before any data is read or any file touched.
    names = configured_class_names(config.model.class_names)
    geometry = model_geometry(config.model, class_names=names)
    check_methods(config.model, config.saliency)
    model_notes(config.model, config.saliency)  # logged now, before any data is read
    options = pipeline_options(config.beam.flags(beam_args))
    configure(options)  # before the first object-store access (the lock, recovery)
    folders = folder_class_names(config.source, geometry.num_classes)  # labels: folders
    if folders and not config.model.class_names:  # the workers name classes with them
        model = dataclasses.replace(config.model, class_names=folders)
        config = dataclasses.replace(config, model=model)
    out_dir = config.output.dir.rstrip("/")
    created = is_local(out_dir) and not os.path.exists(out_dir)
    try:
        with output_lock(out_dir, ttl_s=config.run.lock_ttl_s, options=options) as held:
            summary = _locked_run(config, options, geometry, out_dir, progress_bar, held)
    except ConfigError:
        if created:  # a run that did not start leaves no directory and no lock behind
            remove_empty_output(out_dir)
        raise
    finally:
        REPORTER.close()
    _LOG.debug("summary: %s", json.dumps(dataclasses.asdict(summary)))
    return summary


def _locked_run(
    config: Config,
    options: PipelineOptions,
    geometry: Any,
    out_dir: str,
    progress_bar: bool | None,
    held: Any,
) -> Summary:
    removed = recover_output(out_dir)
    if removed:
        _LOG.warning("removed %d files left by an interrupted run in %s", removed, out_dir)
    attempt = new_attempt(config)
    start = time.monotonic()
    try:
        p = beam.Pipeline(runner=make_runner(options), options=options)
        build_pipeline(p, config, attempt=attempt)
    except ValueError as exc:  # what the config names cannot be read: nothing ran
        raise ConfigError(str(exc)) from exc
    carried: list[dict] = []
    if attempt.incremental:
        carried = _carried_rows(out_dir, geometry.fingerprint, attempt.settings)
        n = write_done_index(
            attempt.done_index, (done_token(r["key"], r["sha256"]) for r in carried)
        )
        _LOG.info("incremental: %d images already done with these settings", n)
    in_process = _in_process(options)
    if progress_bar is None:
        progress_bar = sys.stderr.isatty()
    REPORTER.reset(
        total=input_total(config) if in_process else None,
        bar=bool(progress_bar) and in_process,
        every=config.run.progress_every,
        stream=sys.stderr,
    )
    state = p.run().wait_until_finish()
    if state not in (None, PipelineState.DONE):
        raise RuntimeError(f"the pipeline ended in state {state}; nothing was published")
    counts = read_json(counts_path(attempt.staging))
    held.verify()  # a run whose lock was taken over publishes nothing
    published = publish(
        out_dir, shard_set=attempt.shard_set, carried=carried, fsync=config.output.fsync
    )
    summary = summarise(
        config,
        counts,
        output_dir=attempt.output_dir,
        shard_set=attempt.shard_set,
        records_total=published.records_total,
        start=start,
        notes=model_notes(config.model, config.saliency),  # the launcher's model, cached
    )
    write_json(
        join_path(out_dir, SUMMARY_NAME), dataclasses.asdict(summary), fsync=config.output.fsync
    )
    write_index(out_dir, title=f"{summary.records_total} records - {config.model.name}")
    return summary


def _in_process(options: PipelineOptions) -> bool:
    """Whether the workers run in this process (DirectRunner in memory): they can drive
    this process's progress bar."""
    runner = options.view_as(StandardOptions).runner
    mode = options.view_as(DirectOptions).direct_running_mode
    return runner in LOCAL_RUNNERS and mode in (None, "in_memory")


def input_total(config: Config) -> int | None:
    """How many inputs a run will read, when that is cheap to know (local file patterns;
    None otherwise: the bar then counts without a total)."""
    src = config.source
    if src.kind != "files":
        return None
    patterns = [normalise_pattern(p) for p in split_patterns(src.pattern)]
    if not all(is_local(p) for p in patterns):
        return None
    try:
        paths = {path for pattern in patterns for path, _ in list_pattern(pattern)}
    except (ValueError, OSError):
        return None
    return len(paths) if src.limit is None else min(len(paths), src.limit)
