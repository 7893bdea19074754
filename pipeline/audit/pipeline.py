"""The audit as Beam transforms: published records -> rows.jsonl, audit.json, PNG maps.

    records -> AuditRows (per record and method) --+-- rows.jsonl (streamed, one file)
                                                   `-- per (method, class) ClassAggregate
                                                       (a CombineFn, bounded memory)
                                                       -> strategies + flags + PNGs
                                                       -> audit.json (one small list)

The maths is in audit/metrics, strategies, flags, aggregates and report_data; this module
only wires it. ``run_audit`` reads an output dir's published records (so an incremental
nightly run audits old and new records together) with the in-process runner.
"""

import json
import logging
from typing import Any

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from pipeline.audit.aggregates import ClassAggregate, merge_all
from pipeline.audit.report_data import assemble, class_method_report
from pipeline.audit.rows import Annotation, load_annotations, record_rows
from pipeline.config import Config
from pipeline.store import records
from pipeline.store.files import read_json, write_atomic, write_json
from pipeline.store.layout import (
    AUDIT_JSON,
    AUDIT_ROWS,
    RECORDS_DIR,
    RECORDS_SUFFIX,
    join_path,
)

_LOG = logging.getLogger(__name__)


class _RowsFn(beam.DoFn):
    """DecodedRecord -> (row JSON line) on "rows" and ((method, class), (key, row, map))."""

    def __init__(self, annotations: dict[str, Annotation], policy: str, size: int) -> None:
        self._annotations = annotations
        self._policy = policy
        self._size = size

    def process(self, record: Any):
        annotation = self._annotations.get(record.key)
        for row, small in record_rows(record, annotation=annotation,
                                      resize_policy=self._policy, map_size=self._size):  # fmt: skip
            yield beam.pvalue.TaggedOutput("rows", json.dumps(row, sort_keys=True))
            yield (row["method"], row["class"]), (row["key"], row, small)


_NOT_METRICS = ("key", "record_id", "class", "label", "method", "confidence")


class _AggregateFn(beam.CombineFn):
    """(key, row, small map) values -> one ClassAggregate (bounded by the reservoir)."""

    def __init__(self, reservoir: int) -> None:
        self._reservoir = reservoir

    def create_accumulator(self) -> ClassAggregate:
        return ClassAggregate(reservoir=self._reservoir)

    def add_input(self, aggregate: ClassAggregate, value: tuple) -> ClassAggregate:
        key, row, small = value
        metrics = {k: v for k, v in row.items() if k not in _NOT_METRICS}
        correct = None if row["label"] < 0 else row["label"] == row["class"]
        aggregate.add(key, metrics=metrics, small_map=small, confidence=row["confidence"],
                      correct=correct)  # fmt: skip
        return aggregate

    def merge_accumulators(self, aggregates) -> ClassAggregate:
        return merge_all(aggregates, self._reservoir)

    def extract_output(self, aggregate: ClassAggregate) -> ClassAggregate:
        return aggregate


def _report(item: tuple, output_dir: str, neighbours: int, max_clusters: int) -> dict:
    (method, class_id), aggregate = item
    part, files = class_method_report(method, int(class_id), aggregate, neighbours=neighbours,
                                      max_clusters=max_clusters)  # fmt: skip
    for relative, data in files.items():
        write_atomic(join_path(output_dir, relative), data, mime_type="image/png")
    return part


def _write_audit(parts: list[dict], output_dir: str, map_size: int) -> dict:
    total = sum(p["summary"]["count"] for p in parts if p["method"] == parts[0]["method"])
    audit = assemble(parts, records=total if parts else 0, map_size=map_size)
    write_json(join_path(output_dir, AUDIT_JSON), audit)
    return audit


def build_audit(records_pcoll: beam.PCollection, config: Config) -> beam.PCollection:
    """Add the audit of ``records_pcoll`` (DecodedRecord) to its pipeline; returns the
    PCollection of the one audit.json dict."""
    a, out_dir = config.audit, config.output.dir.rstrip("/")
    annotations = load_annotations(a.annotations)
    rows = records_pcoll | "AuditRows" >> beam.ParDo(
        _RowsFn(annotations, config.source.resize, a.map_size)
    ).with_outputs("rows", main="keyed")
    _ = rows.rows | "WriteAuditRows" >> beam.io.WriteToText(
        join_path(out_dir, AUDIT_ROWS), num_shards=1, shard_name_template=""
    )
    return (
        rows.keyed
        | "AggregatePerClass" >> beam.CombinePerKey(_AggregateFn(a.reservoir))
        | "ClassReports" >> beam.Map(_report, out_dir, a.neighbours, a.max_clusters)
        | "CollectReports" >> beam.combiners.ToList()
        | "WriteAuditJson" >> beam.Map(_write_audit, out_dir, a.map_size)
    )


def run_audit(config: Config) -> dict:
    """Audit the published records of ``config.output.dir``; returns audit.json's dict."""
    out_dir = config.output.dir.rstrip("/")
    pattern = join_path(out_dir, f"{RECORDS_DIR}/*{RECORDS_SUFFIX}")
    with beam.Pipeline(runner=FnApiRunner()) as p:
        decoded = (
            p
            | "ReadRecords" >> beam.io.ReadFromTFRecord(pattern)
            | "ParseRecords" >> beam.Map(records.parse)
        )
        _ = build_audit(decoded, config)
    return read_json(join_path(out_dir, AUDIT_JSON))
