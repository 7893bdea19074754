"""The audit's stage of the job: each record's audit row line computed on the worker that
made its maps (audit.row_lines), written as shards next to the records in the attempt's
staging dir; publish moves them with the records (store.publish), so a rerun, a crash and
an incremental run leave each record's line exactly once."""

from __future__ import annotations

import apache_beam as beam
from apache_beam import coders
from apache_beam.io.filesystem import CompressionTypes

from pipeline.audit.row_lines import audit_settings, row_line
from pipeline.audit.rows import Annotation
from pipeline.beam.sinks import RecordSink
from pipeline.config import Config
from pipeline.elements import SaliencyRecord
from pipeline.store.layout import RECORDS_SUFFIX, ROW_SHARDS, join_path
from pipeline.store.record_view import decoded_view

__all__ = ["AuditRows"]


class _RowLineFn(beam.DoFn):
    """SaliencyRecord -> its row line (bytes)."""

    def __init__(self, annotations: dict[str, Annotation], policy: str, map_size: int,
                 settings: str, include_image: bool) -> None:  # fmt: skip
        self._annotations = annotations
        self._policy = policy
        self._map_size = map_size
        self._settings = settings
        self._include_image = include_image
        self._lines = beam.metrics.Metrics.counter("audit", "row_lines")

    def process(self, record: SaliencyRecord):
        view = decoded_view(record, include_image=self._include_image)
        self._lines.inc()
        yield row_line(view, annotation=self._annotations.get(record.key),
                       resize_policy=self._policy, map_size=self._map_size,
                       settings=self._settings)  # fmt: skip


class AuditRows(beam.PTransform):
    """PCollection[SaliencyRecord] -> row-line shards under ``output_dir``/audit_rows/
    (the staging dir in a run); returns the written file names."""

    def __init__(self, output_dir: str, config: Config, *, num_shards: int = 0) -> None:
        super().__init__()
        self._annotations, self._settings = audit_settings(config)
        self._policy = config.source.resize
        self._map_size = config.audit.map_size
        self._include_image = config.output.include_image
        self._prefix = join_path(output_dir, ROW_SHARDS.prefix)
        self._num_shards = int(num_shards)

    def expand(self, records):
        fn = _RowLineFn(self._annotations, self._policy, self._map_size, self._settings,
                        self._include_image)  # fmt: skip
        sink = RecordSink(self._prefix, coders.BytesCoder(), RECORDS_SUFFIX, self._num_shards,
                          None, CompressionTypes.UNCOMPRESSED)  # fmt: skip
        return records | "RowLines" >> beam.ParDo(fn) | "WriteRowShards" >> beam.io.Write(sink)
