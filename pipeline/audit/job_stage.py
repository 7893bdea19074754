"""The audit's stage of the job: each record's audit row line computed on the worker that
made its maps (audit.record.lines), written as shards next to the records in the attempt's
staging dir; publish moves them with the records (store.publish), so a rerun, a crash and
an incremental run leave each record's line exactly once."""

from __future__ import annotations

import apache_beam as beam
from apache_beam import coders
from apache_beam.io.filesystem import CompressionTypes

from pipeline.audit.record.lines import LineMaker, line_maker
from pipeline.config import Config
from pipeline.elements import SaliencyRecord
from pipeline.store.layout import RECORDS_SUFFIX, ROW_SHARDS, join_path
from pipeline.store.record_view import decoded_view
from pipeline.store.tfrecord_sink import RecordSink

__all__ = ["AuditRows"]


class _RowLineFn(beam.DoFn):
    """SaliencyRecord -> its row line (bytes)."""

    def __init__(self, maker: LineMaker, include_image: bool) -> None:
        self._maker = maker
        self._include_image = include_image
        self._lines = beam.metrics.Metrics.counter("audit", "row_lines")

    def process(self, record: SaliencyRecord):
        self._lines.inc()
        yield self._maker.line(decoded_view(record, include_image=self._include_image))


class AuditRows(beam.PTransform):
    """PCollection[SaliencyRecord] -> row-line shards under ``output_dir``/audit_rows/
    (the staging dir in a run); returns the written file names."""

    def __init__(self, output_dir: str, config: Config, *, num_shards: int = 0) -> None:
        super().__init__()
        self._maker = line_maker(config)
        self._include_image = config.output.include_image
        self._prefix = join_path(output_dir, ROW_SHARDS.prefix)
        self._num_shards = int(num_shards)

    def expand(self, records):
        fn = _RowLineFn(self._maker, self._include_image)
        sink = RecordSink(self._prefix, coders.BytesCoder(), RECORDS_SUFFIX, self._num_shards,
                          None, CompressionTypes.UNCOMPRESSED)  # fmt: skip
        return records | "RowLines" >> beam.ParDo(fn) | "WriteRowShards" >> beam.io.Write(sink)
