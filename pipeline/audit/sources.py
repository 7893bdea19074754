"""Where an audit's row lines come from: the published ``audit_rows/`` shards of each
committed shard set whose lines are complete and have this audit's settings, else (an output
dir written by an older version, with the audit off, or with other annotations / map size)
the set's records, re-read and measured on the runner by the same function
(audit.record.lines). Rebuilt lines are kept: each record shard's lines are written (a temp
file renamed: whole or absent) as its twin ``rows-<set>-SSSSS-of-NNNNN``, so the next audit
reads them; a set is read from its lines only when every shard of their numbering is there.
The audit holds the output lock, so no run publishes meanwhile."""

from __future__ import annotations

import dataclasses
import uuid

import apache_beam as beam
import tensorflow as tf
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil  # the format Beam's sink writes

from pipeline.audit.record.lines import LineMaker, line_settings, parse_row_line
from pipeline.elements import key_priority, record_id
from pipeline.store import records
from pipeline.store.files import delete_files, rename
from pipeline.store.layout import RECORD_SHARDS, ROW_SHARDS, join_path
from pipeline.store.manifest import committed_sets, shard_files

__all__ = ["LinePlan", "ReadRowLines", "ReadWanted", "SmallestLines", "plan_lines"]


@dataclasses.dataclass(frozen=True)
class LinePlan:
    """Which shards an audit reads: row-line shards, and record shards to rebuild from."""

    row_shards: tuple[str, ...]
    rebuild_shards: tuple[str, ...]
    rebuilt_sets: tuple[str, ...]


def _first_settings(paths: list[str]) -> str | None:
    for path in paths:
        for raw in records.read_raw(path):
            return line_settings(raw)
    return None


def _complete(paths: list[str]) -> bool:
    """Every shard SSSSS of one numbering NNNNN is there."""
    positions = {ROW_SHARDS.position(p.rsplit("/", 1)[-1]) for p in paths}
    counts = {n for _, n in positions if n}
    return len(counts) == 1 and {i for i, _ in positions} == set(range(counts.pop()))


def plan_lines(output_dir: str, settings: str) -> LinePlan:
    """The plan for the committed shard sets of ``output_dir`` (reads one line per set)."""
    row_shards, rebuild, rebuilt = [], [], []
    for shard_set in committed_sets(output_dir):
        lines = shard_files(output_dir, {shard_set}, ROW_SHARDS)
        found = _first_settings(lines) if lines else None
        if lines and _complete(lines) and found in (None, settings):  # None: all empty
            row_shards += lines
        else:
            rebuild += shard_files(output_dir, {shard_set})
            rebuilt.append(shard_set)
    return LinePlan(tuple(row_shards), tuple(rebuild), tuple(rebuilt))


def clear_rebuilt(output_dir: str, plan: LinePlan) -> int:
    """Delete the row shards of the sets the plan rebuilds (incomplete, or of other
    settings), so their rebuilt twins are the set's only lines; returns how many."""
    return delete_files(shard_files(output_dir, set(plan.rebuilt_sets), ROW_SHARDS))


def twin_path(record_shard: str) -> str:
    """The row shard that holds the rebuilt lines of a committed record shard."""
    directory, name = record_shard.rsplit("/", 1)
    shard_set = RECORD_SHARDS.set_of(name)
    index, count = RECORD_SHARDS.position(name)
    output_dir = directory[: -len(RECORD_SHARDS.directory)].rstrip("/")
    relative = f"{ROW_SHARDS.directory}/{ROW_SHARDS.name(shard_set, f'{index:05d}-of-{count:05d}')}"
    return join_path(output_dir, relative)


class _RebuildShardFn(beam.DoFn):
    """A committed record shard -> the row lines of its records (parsed), as the job would
    have written them; they are also kept as the shard's twin row shard."""

    def __init__(self, maker: LineMaker) -> None:
        self._maker = maker
        self._rebuilt = beam.metrics.Metrics.counter("audit", "row_lines_rebuilt")

    def process(self, shard: str):
        target = twin_path(shard)
        directory, name = target.rsplit("/", 1)
        tmp = f"{directory}/.{name}.tmp-{uuid.uuid4().hex}"
        with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as out:
            for raw in records.read_raw(shard):
                line = self._maker.line(records.parse(raw))
                _TFRecordUtil.write_record(out, line)
                self._rebuilt.inc()
                yield parse_row_line(line)
        rename(tmp, target)


class ReadRowLines(beam.PTransform):
    """PBegin -> PCollection[dict]: every committed record's row line, per the plan."""

    def __init__(self, plan: LinePlan, maker: LineMaker) -> None:
        super().__init__()
        self._plan = plan
        self._rebuild = _RebuildShardFn(maker)

    def expand(self, pbegin):
        published = (
            pbegin
            | "RowShards" >> beam.Create(list(self._plan.row_shards))
            | "ReadRowShards" >> beam.io.ReadAllFromTFRecord()
            | "ParseRowLines" >> beam.Map(parse_row_line)
        )
        rebuilt = (
            pbegin
            | "RebuildShards" >> beam.Create(list(self._plan.rebuild_shards))
            | "RebuildRowLines" >> beam.ParDo(self._rebuild)
        )
        return (published, rebuilt) | "AllRowLines" >> beam.Flatten()


def _line_priority(line: dict) -> tuple[int, str]:
    return key_priority(line["record_id"]), line["record_id"]


def record_id_of(raw: bytes) -> tuple[str, str]:
    """A serialised record's (record_id, key) (DecodedRecord's), without decoding its maps."""
    f = tf.train.Example.FromString(raw).features.feature
    key = f["image/key"].bytes_list.value[0].decode("utf-8")
    rank = f["target/rank"].int64_list.value[0] if "target/rank" in f else 0
    return record_id(key, rank, f["target/class"].int64_list.value[0]), key


class SmallestLines(beam.PTransform):
    """Row lines -> one list: the ``n`` lines with the smallest key hashes (a uniform
    sample, the same on every runner)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self._n = int(n)

    def expand(self, lines):
        return lines | "Smallest" >> beam.combiners.Top.Of(self._n, key=_line_priority,
                                                           reverse=True)  # fmt: skip


def sample_ids(lines: list[dict]) -> frozenset[str]:
    """The record_ids of sampled lines (SmallestLines' output)."""
    return frozenset(line["record_id"] for line in lines)


def pool_keys(lines: list[dict]) -> list[str]:
    """The keys of sampled lines, sorted."""
    return sorted({line["key"] for line in lines})


class _WantedFn(beam.DoFn):
    """Serialised record -> its DecodedRecord on "sanity" (its record_id is wanted) and on
    "confirm" (its key is wanted); others are not decoded."""

    def process(self, raw: bytes, wanted: dict):
        rid, key = record_id_of(raw)
        sanity, confirm = rid in wanted["sanity"], key in wanted["confirm"]
        if not (sanity or confirm):
            return
        record = records.parse(raw)  # once, whichever purposes want it
        if sanity:
            yield beam.pvalue.TaggedOutput("sanity", record)
        if confirm:
            yield beam.pvalue.TaggedOutput("confirm", record)


class ReadWanted(beam.PTransform):
    """wanted (one dict: {"sanity": record_ids, "confirm": keys}) -> DecodedRecords tagged
    "sanity" and "confirm", in one scan of the record ``shards`` (only the wanted ones are
    decoded)."""

    def __init__(self, shards: list[str]) -> None:
        super().__init__()
        self._shards = list(shards)

    def expand(self, wanted):
        return (
            wanted.pipeline
            | "WantedShards" >> beam.Create(self._shards)
            | "ReadWantedRecords" >> beam.io.ReadAllFromTFRecord()
            | "DecodeWanted"
            >> beam.ParDo(_WantedFn(), beam.pvalue.AsSingleton(wanted)).with_outputs(
                "sanity", "confirm"
            )
        )
