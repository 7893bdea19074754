"""The audit as Beam transforms: published row lines -> rows.jsonl, audit.json, PNG maps.

    row lines (audit_rows/, written by the job on its workers; or rebuilt from the records,
    audit.sources) -> AuditRows (per record and method) --+-- rows.jsonl
               |                                   `-- per (group, method, id)
               |                                       ClassAggregate (a CombineFn,
               |                                       bounded memory; groups: predicted
               |                                       class, true label, label-prediction
               |                                       error) -> strategies + flags + PNGs
               |                                       -> audit.json (one small list)
    records, one scan (ReadWanted) -> the sanity sample (the sanity_samples smallest key
               hashes) -> the cascading-randomisation check (loads the model)
            `-> each flag's first members and a recipient pool -> the causal
               tests (audit/causal: occlusion and transplant, the model) -> audit.json

The maths is in audit/metrics, audit/record and audit/dataset; this module
only wires it. ``run_audit`` aggregates an output dir's published row lines (so a nightly
incremental run measures only its new records, and the audit reads old and new lines
together) on the configured runner (``--runner`` / ``beam:``; the in-process FnApiRunner
for DirectRunner). With ``audit.sanity_samples`` > 0 it also reads the records, for the
sample's images, and for the flags' members when there are flags to confirm.
"""

import dataclasses
import json
import logging
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.audit.causal.confirm import (
    RECIPIENT_POOL,
    confirm_all,
    confirmable,
    flag_id,
    wanted_keys,
)
from pipeline.audit.causal.sanity import sanity_panel
from pipeline.audit.dataset.aggregates import ClassAggregate, merge_all
from pipeline.audit.dataset.audit_json import assemble, error_id, group_report
from pipeline.audit.dataset.relative import relative_flags
from pipeline.audit.dataset.repeated_patterns import REFERENCE_MEMBERS, reference_entry
from pipeline.audit.dataset.slices import record_columns, slice_ids
from pipeline.audit.record.lines import line_maker
from pipeline.audit.record.rows import Annotation
from pipeline.audit.report.drift import check_rules, compare, parse_rule
from pipeline.audit.report.html import render_report
from pipeline.audit.report.tensorboard import (
    TENSORBOARD_DIR,
    export_tensorboard,
    tensorboard_missing,
)
from pipeline.audit.sources import (
    ReadRowLines,
    ReadWanted,
    SmallestLines,
    clear_rebuilt,
    plan_lines,
    pool_keys,
    sample_ids,
)
from pipeline.config import AuditConfig, Config
from pipeline.config.audit import slice_spec
from pipeline.elements import key_priority
from pipeline.runners import make_runner
from pipeline.store.files import (
    delete_files,
    delete_tree,
    read_json,
    read_jsonl,
    write_atomic,
    write_json,
)
from pipeline.store.history import (
    archive_audit,
    latest_audit,
    latest_name,
    recover_audits,
    stamp,
)
from pipeline.store.index import write_index
from pipeline.store.layout import (
    AUDIT_DRIFT_JSON,
    AUDIT_JSON,
    AUDIT_MAPS,
    AUDIT_REPORT,
    AUDIT_ROWS,
    FAILURES_NAME,
    MANIFEST_NAME,
    SUMMARY_NAME,
    join_path,
)
from pipeline.store.manifest import committed_shards
from pipeline.store.object_stores import configure
from pipeline.store.publish import output_lock, recover_output

_LOG = logging.getLogger(__name__)


class _RowsFn(beam.DoFn):
    """A row line (audit.record.lines) -> (row JSON line) on "rows", and ((group, method, id),
    (key, row, map, curves, hotspots)) for the class its map explains (the predicted class
    unless the target is a label, a fixed class, top-k or a multi-label's positive labels),
    its true label, its error (when known) and its slices."""

    def __init__(self, annotations: dict[str, Annotation], slices: tuple = ()) -> None:
        self._annotations = annotations
        self._slices = tuple(slice_spec(s) for s in slices)

    def process(self, line: dict):
        annotation = self._annotations.get(line["key"])
        columns = record_columns(line["key"], line["metadata"],
                                 dict(annotation.columns) if annotation else {})  # fmt: skip
        in_slices = slice_ids(self._slices, columns)
        for entry in line["methods"]:
            row, small, curves = entry["row"], entry["map"], entry["curves"]
            yield beam.pvalue.TaggedOutput("rows", json.dumps(row, sort_keys=True))
            value = (row["key"], row, small, curves, entry.get("hotspots"))
            method, predicted, label = row["method"], row["class"], row["label"]
            yield ("class", method, row["target"]), value
            if label >= 0:
                yield ("label", method, label), value
                if label != predicted:
                    yield ("error", method, error_id(label, predicted)), value
            for slice_name in in_slices:
                yield ("slice", method, slice_name), value


_NOT_METRICS = ("key", "record_id", "class", "target", "label", "method", "confidence")


class _AggregateFn(beam.CombineFn):
    """(key, row, small map, curves, hotspots) values -> one ClassAggregate (bounded by the
    reservoir)."""

    def __init__(self, reservoir: int) -> None:
        self._reservoir = reservoir

    def create_accumulator(self) -> ClassAggregate:
        return ClassAggregate(reservoir=self._reservoir)

    def add_input(self, aggregate: ClassAggregate, value: tuple) -> ClassAggregate:
        key, row, small, curves, spot = value
        metrics = {k: v for k, v in row.items() if k not in _NOT_METRICS}
        correct = None if row["label"] < 0 else row["label"] == row["class"]
        aggregate.add(key, metrics=metrics, small_map=small, confidence=row["confidence"],
                      correct=correct, curves=curves, hotspots=spot)  # fmt: skip
        return aggregate

    def merge_accumulators(self, aggregates) -> ClassAggregate:
        return merge_all(aggregates, self._reservoir)

    def extract_output(self, aggregate: ClassAggregate) -> ClassAggregate:
        return aggregate


def _reference_entries(item: tuple):
    """((group, method, id), value) of a class group -> (method, its reference entry)."""
    (group, method, group_id), (key, _, _, _, spots) = item
    if group == "class":
        yield method, reference_entry(key_priority(key), key, group_id, spots)


def _report(
    item: tuple, output_dir: str, neighbours: int, max_clusters: int, reference: dict
) -> dict:
    (group, method, group_id), aggregate = item
    part, files = group_report(group, method, group_id, aggregate, neighbours=neighbours,
                               max_clusters=max_clusters,
                               reference=tuple(reference.get(method, ())))  # fmt: skip
    for relative, data in files.items():
        write_atomic(join_path(output_dir, relative), data, mime_type="image/png")
    return part


def _write_audit(
    parts: list[dict], output_dir: str, audit: AuditConfig, sanity: list, confirmed: list
) -> dict:
    found = confirmed[0] if confirmed else {}
    for part in parts:  # each tested flag gets its confirmation
        for index, flag in enumerate(part["flags"]):
            fid = flag_id(part["group"], part["method"], part["id"], index)
            if fid in found:
                flag["confirmation"] = found[fid]
    classes = [p for p in parts if p["group"] == "class"]
    total = sum(p["summary"]["count"] for p in classes if p["method"] == classes[0]["method"])
    out = assemble(parts, records=total if classes else 0, map_size=audit.map_size,
                   sanity=sanity[0] if sanity else None,
                   baseline=audit.faithfulness_baseline)  # fmt: skip
    write_json(join_path(output_dir, AUDIT_JSON), out)
    return out


def _record_priority(record: Any) -> tuple[int, str]:
    return key_priority(record.record_id), record.record_id


def _sanity(sample: list, config: Config) -> dict:
    sample = sorted(sample, key=_record_priority)  # the order does not depend on the runner
    return sanity_panel(config.model, config.saliency, sample, layers=config.audit.sanity_layers)


def _wanted(sanity: frozenset, confirm: frozenset) -> dict:
    return {"sanity": sanity, "confirm": confirm}


def _confirm(records: list, parts: list[dict], pool: list[str], config: Config,
             annotations: dict[str, Annotation]) -> dict:  # fmt: skip
    tested = len(confirmable(parts))
    if not tested or not records:
        return {}
    _LOG.info("confirming %d flag(s) by occlusion and transplant on %d records",
              tested, len(records))  # fmt: skip
    results, files = confirm_all(
        parts, records, pool, model=config.model, saliency=config.saliency,
        annotations=annotations, resize_policy=config.source.resize,
        members=config.audit.confirm_members,
    )  # fmt: skip
    out_dir = config.output.dir.rstrip("/")
    for relative, data in files.items():
        write_atomic(join_path(out_dir, relative), data, mime_type="image/png")
    return results


def build_audit(
    lines: beam.PCollection,
    config: Config,
    *,
    annotations: dict[str, Annotation],
    shards: list[str] = (),
) -> beam.PCollection:
    """Add the audit of ``lines`` (parsed row lines) to their pipeline; with record
    ``shards``, the sanity check (audit.sanity_samples) and the flags' causal confirmation
    (audit.confirm_members) read them in one scan. Returns the PCollection of the one
    audit.json dict."""
    a, out_dir = config.audit, config.output.dir.rstrip("/")
    rows = lines | "AuditRows" >> beam.ParDo(_RowsFn(annotations, a.slices)).with_outputs(
        "rows", main="keyed"
    )
    _ = rows.rows | "WriteAuditRows" >> beam.io.WriteToText(
        join_path(out_dir, AUDIT_ROWS), num_shards=1, shard_name_template=""
    )
    reference = (
        rows.keyed
        | "ReferenceEntries" >> beam.FlatMap(_reference_entries)
        | "ReferenceSample" >> beam.combiners.Top.SmallestPerKey(REFERENCE_MEMBERS)
    )
    parts = (
        rows.keyed
        | "AggregatePerGroup" >> beam.CombinePerKey(_AggregateFn(a.reservoir))
        | "GroupReports"
        >> beam.Map(
            _report, out_dir, a.neighbours, a.max_clusters, beam.pvalue.AsDict(reference)
        )  # fmt: skip
        | "CollectReports" >> beam.combiners.ToList()
        | "RelativeFlags" >> beam.Map(relative_flags)
    )
    nothing = beam.pvalue.AsList(lines.pipeline | "NoSanity" >> beam.Create([]))
    sanity, confirmed = nothing, nothing
    if shards and (a.sanity_samples or a.confirm_members):
        if a.sanity_samples:
            ids = (
                lines | "SanitySample" >> SmallestLines(a.sanity_samples)
                | "SampleIds" >> beam.Map(sample_ids)
            )  # fmt: skip
        else:
            ids = lines.pipeline | "NoSample" >> beam.Create([frozenset()])
        pool = (
            lines | "RecipientPool" >> SmallestLines(RECIPIENT_POOL)
            | "PoolKeys" >> beam.Map(pool_keys)
        )  # fmt: skip
        keys = parts | "ConfirmKeys" >> beam.Map(
            wanted_keys, beam.pvalue.AsSingleton(pool), a.confirm_members
        )
        wanted = ids | "Wanted" >> beam.Map(_wanted, beam.pvalue.AsSingleton(keys))
        found = wanted | "ReadWanted" >> ReadWanted(list(shards))
        if a.sanity_samples:
            sanity = beam.pvalue.AsList(
                found.sanity
                | "CollectSample" >> beam.combiners.ToList()
                | "SanityCheck" >> beam.Map(_sanity, config)
            )
        confirmed = beam.pvalue.AsList(
            found.confirm
            | "CollectConfirm" >> beam.combiners.ToList()
            | "ConfirmFlags" >> beam.Map(
                _confirm, beam.pvalue.AsSingleton(parts), beam.pvalue.AsSingleton(pool),
                config, annotations,
            )
        )  # fmt: skip
    return parts | "WriteAuditJson" >> beam.Map(_write_audit, out_dir, a, sanity, confirmed)


def write_report(config: Config, audit: dict, drift: dict | None = None) -> str:
    """audit/report.html from audit.json and the run's manifest, summary, failures and rows
    (and what changed since the previous audit, when compared)."""
    out_dir = config.output.dir.rstrip("/")

    def optional(name: str, reader):
        path = join_path(out_dir, name)
        return reader(path) if FileSystems.exists(path) else None

    page = render_report(
        audit,
        summary=optional(SUMMARY_NAME, read_json),
        manifest=optional(MANIFEST_NAME, read_jsonl),
        rows=optional(AUDIT_ROWS, read_jsonl),
        failures=optional(FAILURES_NAME, read_jsonl),
        settings=config.to_dict(),
        drift=drift,
    )
    return write_atomic(join_path(out_dir, AUDIT_REPORT), page.encode("utf-8"),
                        mime_type="text/html")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class AuditResult:
    """What ``run_audit`` wrote: audit.json's dict, the drift against the previous audit
    (None when not compared), the run.audit_fail_on rules it broke, the archive entry."""

    audit: dict
    drift: dict | None
    broken: tuple[str, ...]
    archived: str


def run_audit(config: Config, beam_args: Sequence[str] = ()) -> AuditResult:
    """Audit the published records of ``config.output.dir``: audit.json, rows.jsonl, the PNG
    maps, drift.json (run.audit_drift), report.html, the archive under audits/<timestamp>/
    and index.html. Runs on the runner ``beam_args`` / ``beam:`` name (DirectRunner: this
    process), which also give its filesystems their options (e.g. --s3_endpoint_url).

    Holds the output lock (a run cannot publish under it, nor another audit write), and
    first removes what a killed audit left (store.history.recover_audits)."""
    options = PipelineOptions(config.beam.flags(beam_args))
    configure(options)
    out_dir = config.output.dir.rstrip("/")
    with output_lock(out_dir, ttl_s=config.run.lock_ttl_s, options=options) as held:
        removed = recover_audits(out_dir) + recover_output(out_dir)  # incl. killed rebuilds
        if removed:
            _LOG.info("removed %d file(s) left by an interrupted audit", removed)
        return _audit_locked(config, options, out_dir, held)


def _audit_locked(config: Config, options: PipelineOptions, out_dir: str, held) -> AuditResult:
    previous = latest_audit(out_dir) if config.run.audit_drift == "previous" else None
    delete_tree(join_path(out_dir, AUDIT_MAPS))  # this audit's maps only, none left over
    # Only the shard sets the manifest commits: never a half-published attempt's shards.
    shards = committed_shards(out_dir)
    if not shards:
        raise FileNotFoundError(
            f"{out_dir} has no published records (no shard named by {MANIFEST_NAME}): run "
            "`python -m pipeline run` with output.records: true first"
        )
    maker = line_maker(config)
    plan = plan_lines(out_dir, maker.settings)
    if plan.rebuilt_sets:  # their lines are rebuilt from the records, and kept
        clear_rebuilt(out_dir, plan)
        _LOG.info("audit: row lines rebuilt from the records of %d shard set(s)",
                  len(plan.rebuilt_sets))  # fmt: skip
    with beam.Pipeline(runner=make_runner(options), options=options) as p:
        lines = p | "RowLines" >> ReadRowLines(plan, maker)
        _ = build_audit(lines, config, annotations=maker.annotations, shards=shards)
    audit = read_json(join_path(out_dir, AUDIT_JSON))
    drift, broken = None, ()
    if previous is not None:
        drift = {"previous": previous[0], **compare(previous[1], audit)}
        broken = tuple(check_rules(drift, [parse_rule(r) for r in config.run.audit_fail_on]))
        drift["broken"] = list(broken)
        write_json(join_path(out_dir, AUDIT_DRIFT_JSON), drift)
    elif FileSystems.exists(join_path(out_dir, AUDIT_DRIFT_JSON)):
        delete_files([join_path(out_dir, AUDIT_DRIFT_JSON)])  # not of this audit
    write_report(config, audit, drift)
    held.verify()  # the lock was taken over: archive nothing
    name, last = stamp(), latest_name(out_dir)
    if last is not None and name <= last:  # two audits in one second
        name = f"{last}-1"
    archived = archive_audit(out_dir, name)
    _refresh_tensorboard(out_dir)
    write_index(out_dir, title=f"{audit['records']} records - {config.model.name}")  # links it
    return AuditResult(audit, drift, broken, archived)


def _refresh_tensorboard(out_dir: str) -> None:
    """Once OUT/tensorboard/ exists (python -m pipeline tensorboard OUT), every audit
    rewrites it, so the schedule's history is there without a second command."""
    if not FileSystems.exists(join_path(out_dir, TENSORBOARD_DIR)):
        return
    missing = tensorboard_missing()
    if missing:
        _LOG.warning("%s/%s was not refreshed: %s", out_dir, TENSORBOARD_DIR, missing)
        return
    done = export_tensorboard(out_dir)
    _LOG.info("tensorboard: %d audits -> %s", done.steps, done.logdir)
