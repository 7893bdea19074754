"""Beam sinks: TFRecords, PNG artifacts, the manifest, dead letters and small JSON files.

No gradient maths here: records.encode and render do the work, these transforms only
place the bytes. Every file goes through ``apache_beam.io.filesystems.FileSystems``, so
local paths and object stores (gs://, s3://) behave the same.

Output layout under ``output_dir``::

    records/saliency-SSSSS-of-NNNNN.tfrecord   WriteRecords (Beam's temp-then-rename sink)
    artifacts/<safe_key(key)>/<method>_<view>[_t<class>].png   WriteArtifacts
    manifest.jsonl                              WriteManifest (sorted by record_id)
    failures.jsonl                              WriteFailures (sorted by key; may be empty)

Single files are written to a temporary name in the same directory and then renamed, so
a reader never sees half a file and a rerun overwrites the same path with the same bytes.
Records shards are named by Beam; a rerun with another shard count leaves the old shards
next to the new ones, so point each run at a fresh output_dir (or clear records/).
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import uuid
from collections.abc import Callable, Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline import maps, records, render
from pipeline.elements import Failure, SaliencyRecord

ARTIFACT_VIEWS = ("heatmap", "overlay", "grid")
RECORDS_PREFIX = "records/saliency"
RECORDS_SUFFIX = ".tfrecord"
MANIFEST_NAME = "manifest.jsonl"
FAILURES_NAME = "failures.jsonl"

_SAFE_CHARS = frozenset(string.ascii_letters + string.digits + "._-")
_SPECIAL_SEGMENTS = {"": "_", ".": "%2E", "..": "%2E%2E"}
_MAX_SEGMENT = 150  # characters; file systems refuse names over 255 bytes
_HASH_CHARS = 16
_METHOD_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


# --------------------------------------------------------------------------- paths


def safe_key(key: str) -> str:
    """A relative path for ``key`` that stays inside its parent and is unique per key.

    Each '/'-separated segment keeps [A-Za-z0-9._-] and percent-encodes every other
    character (UTF-8 bytes, '%' and '\\\\' and NUL included); '.', '..' and empty segments
    are replaced and over-long segments cut. If any of this changed the key, '~' and the
    first 16 hex digits of the key's sha256 are appended: an unchanged key never contains
    '%' or '~', and changed keys differ by their hash, so two keys never share a path.
    """
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}: {key!r}.")
    segments = []
    changed = False
    for segment in key.split("/"):
        if segment in _SPECIAL_SEGMENTS:
            encoded = _SPECIAL_SEGMENTS[segment]
        else:
            encoded = "".join(
                ch
                if ch in _SAFE_CHARS
                else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
                for ch in segment
            )
        encoded = encoded[:_MAX_SEGMENT]
        changed = changed or encoded != segment
        segments.append(encoded)
    path = "/".join(segments)
    if changed:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        path = f"{path}~{digest[:_HASH_CHARS]}"
    return path


def artifact_path(record: SaliencyRecord, method: str, view: str) -> str:
    """Artifact path relative to output_dir: artifacts/<safe_key>/<method>_<view>[_t<c>].png."""
    suffix = f"_t{record.target_class}" if record.target_rank > 0 else ""
    return f"artifacts/{safe_key(record.key)}/{method}_{view}{suffix}.png"


def _join(output_dir: str, relative: str) -> str:
    return FileSystems.join(output_dir, *relative.split("/"))


# --------------------------------------------------------------------------- atomic files


def write_atomic(path: str, data: bytes | Iterable[bytes], *, mime_type: str = "") -> str:
    """Write ``data`` (bytes, or an iterable of byte chunks) to ``path`` atomically.

    Writes a temporary file in the same directory, then renames it over ``path``
    (local rename, or copy + delete on object stores). Returns ``path``.
    """
    directory, name = FileSystems.split(path)
    tmp = FileSystems.join(directory, f".{name}.tmp-{uuid.uuid4().hex}")
    chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        with FileSystems.create(
            tmp,
            mime_type=mime_type or "application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,
        ) as handle:
            for chunk in chunks:
                handle.write(chunk)
        FileSystems.rename([tmp], [path])
    except BaseException:
        if FileSystems.exists(tmp):
            FileSystems.delete([tmp])
        raise
    return path


def write_json(path: str, obj: object) -> str:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically (run summaries)."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return write_atomic(path, text.encode("utf-8"), mime_type="application/json")


def read_json(path: str) -> dict:
    """A JSON file written by write_json (any Beam filesystem)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return json.loads(handle.read().decode("utf-8"))


def read_jsonl(path: str) -> list[dict]:
    """The rows of a JSON-lines file (manifest.jsonl, failures.jsonl), in file order."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        text = handle.read().decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _json_line(row: dict) -> bytes:
    return (json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_sorted_jsonl(
    path: str, rows: Iterable[dict], *, sort_key: Callable[[dict], tuple]
) -> str:
    """Sort ``rows`` by ``sort_key`` (ties by their JSON text) and write them atomically."""
    lines = sorted((sort_key(r), _json_line(r)) for r in rows)
    return write_atomic(path, (line for _, line in lines), mime_type="application/x-ndjson")


# --------------------------------------------------------------------------- records


def encode_record(record: SaliencyRecord, include_image: bool, percentile: float) -> bytes:
    """records.encode for beam.Map (positional options keep the call picklable)."""
    return records.encode(record, include_image=include_image, percentile=percentile)


class WriteRecords(beam.PTransform):
    """PCollection[SaliencyRecord] -> sharded TFRecords at output_dir/records/saliency-*.

    Output: the written file names. Beam's file sink writes temporary files and renames
    them when the bundle commits, so readers never see half-written shards.
    """

    def __init__(
        self,
        output_dir: str,
        *,
        num_shards: int = 0,
        include_image: bool = True,
        percentile: float = 99.0,
    ) -> None:
        super().__init__()
        if int(num_shards) < 0:
            raise ValueError(f"num_shards={num_shards!r}: use 0 (runner decides) or a count > 0.")
        self._prefix = _join(output_dir, RECORDS_PREFIX)
        self._num_shards = int(num_shards)
        self._include_image = bool(include_image)
        self._percentile = float(percentile)

    def expand(self, pcoll):
        return (
            pcoll
            | "EncodeRecords" >> beam.Map(encode_record, self._include_image, self._percentile)
            | "WriteTFRecords"
            >> beam.io.WriteToTFRecord(
                self._prefix, file_name_suffix=RECORDS_SUFFIX, num_shards=self._num_shards
            )
        )


# --------------------------------------------------------------------------- artifacts


def manifest_entry(record: SaliencyRecord, artifacts: dict[str, dict[str, str]]) -> dict:
    """The manifest row of one record (plain JSON types; artifact paths relative)."""
    return {
        "key": record.key,
        "record_id": record.record_id,
        "source": record.source,
        "sha256": record.sha256,
        "label": int(record.label),
        "prediction_class": int(record.prediction_class),
        "prediction_probability": float(record.prediction_probability),
        "target_class": int(record.target_class),
        "target_rank": int(record.target_rank),
        "target_score": float(record.target_score),
        "artifacts": artifacts,
    }


def render_artifact(
    record: SaliencyRecord, method: str, view: str, *, percentile: float, alpha: float, cmap: str
) -> bytes:
    """PNG bytes of one artifact view of one record and method."""
    gradient = np.asarray(record.gradients[method])
    pixels = np.asarray(record.pixels)
    if view == "grid":
        return render.grid_png(pixels, gradient, percentile=percentile, cmap=cmap)
    abs_map = maps.compute_views(gradient, percentile=percentile, views=("abs",))["abs"]
    if view == "heatmap":
        return render.heatmap_png(abs_map, cmap=cmap)
    if view == "overlay":
        return render.overlay_png(pixels, abs_map, alpha, cmap=cmap)
    raise ValueError(f"artifact view {view!r} is unknown: allowed are {ARTIFACT_VIEWS}.")


class _RenderArtifacts(beam.DoFn):
    def __init__(
        self,
        output_dir: str,
        methods: tuple[str, ...],
        views: tuple[str, ...],
        percentile: float,
        alpha: float,
        cmap: str,
    ) -> None:
        self._output_dir = output_dir
        self._methods = methods
        self._views = views
        self._options = {"percentile": percentile, "alpha": alpha, "cmap": cmap}

    def process(self, record: SaliencyRecord):
        artifacts: dict[str, dict[str, str]] = {}
        for method in self._methods:
            if method not in record.gradients:
                continue  # the manifest lists what exists
            artifacts[method] = {}
            for view in self._views:
                relative = artifact_path(record, method, view)
                data = render_artifact(record, method, view, **self._options)
                write_atomic(_join(self._output_dir, relative), data, mime_type="image/png")
                artifacts[method][view] = relative
        yield manifest_entry(record, artifacts)


class WriteArtifacts(beam.PTransform):
    """PCollection[SaliencyRecord] -> PNGs per record and method; outputs manifest rows.

    Paths: ``{output_dir}/artifacts/{safe_key(key)}/{method}_{view}.png``, with
    ``_t{target_class}`` before ``.png`` for an image's further targets (target_rank > 0).
    Views: heatmap (abs map), overlay (abs map over the image), grid (five views).
    Writes are atomic and idempotent: a rerun writes the same bytes to the same paths.
    """

    def __init__(
        self,
        output_dir: str,
        *,
        methods: Sequence[str],
        views: Sequence[str] = ARTIFACT_VIEWS,
        percentile: float = 99.0,
        alpha: float = 0.5,
        cmap: str = "inferno",
    ) -> None:
        super().__init__()
        methods = tuple(methods)
        bad = [m for m in methods if not isinstance(m, str) or not _METHOD_NAME.match(m)]
        if not methods or bad:
            raise ValueError(
                f"methods={list(methods)!r}: give at least one method name made of "
                "[A-Za-z0-9_-] (e.g. ['vanilla', 'guided'])."
            )
        views = tuple(views)
        unknown = [v for v in views if v not in ARTIFACT_VIEWS]
        if unknown:
            raise ValueError(
                f"views={list(views)!r} has unknown {unknown!r}: allowed are {ARTIFACT_VIEWS}."
            )
        if cmap not in render.COLORMAPS:
            raise ValueError(f"cmap={cmap!r} is unknown: allowed are {render.COLORMAPS}.")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha={alpha!r} is out of range: allowed is 0 <= alpha <= 1.")
        maps.normalise(np.zeros(1), percentile)  # validates percentile now, not on a worker
        self._dofn = _RenderArtifacts(
            output_dir, methods, views, float(percentile), float(alpha), cmap
        )

    def expand(self, pcoll):
        return pcoll | "RenderArtifacts" >> beam.ParDo(self._dofn)


# --------------------------------------------------------------------------- manifests


def manifest_sort_key(row: dict) -> tuple:
    return (str(row["record_id"]),)


def failure_sort_key(row: dict) -> tuple:
    return (str(row["key"]), str(row["stage"]), str(row["source"]), str(row["error"]))


def failure_row(failure: Failure) -> dict:
    if not isinstance(failure, Failure):
        raise TypeError(f"WriteFailures takes Failure elements, got {type(failure).__name__}.")
    return failure.to_json()


def _write_rows(rows: list[dict], path: str, sort_key: Callable[[dict], tuple]) -> str:
    return write_sorted_jsonl(path, rows, sort_key=sort_key)


class _WriteSortedJsonl(beam.PTransform):
    """PCollection[dict] -> one JSON-lines file, sorted; written even when empty."""

    def __init__(self, path: str, sort_key: Callable[[dict], tuple]) -> None:
        super().__init__()
        self._path = path
        self._sort_key = sort_key

    def expand(self, pcoll):
        # A global combine yields [] for an empty input, so the file always exists.
        return (
            pcoll
            | "CollectRows" >> beam.combiners.ToList()
            | "WriteSortedFile" >> beam.Map(_write_rows, self._path, self._sort_key)
        )


class WriteManifest(beam.PTransform):
    """PCollection[dict] (WriteArtifacts' output) -> output_dir/manifest.jsonl by record_id."""

    def __init__(self, output_dir: str) -> None:
        super().__init__()
        self._path = _join(output_dir, MANIFEST_NAME)

    def expand(self, pcoll):
        return pcoll | "WriteManifestFile" >> _WriteSortedJsonl(self._path, manifest_sort_key)


class WriteFailures(beam.PTransform):
    """PCollection[Failure] -> output_dir/failures.jsonl, sorted by key; always written."""

    def __init__(self, output_dir: str) -> None:
        super().__init__()
        self._path = _join(output_dir, FAILURES_NAME)

    def expand(self, pcoll):
        return (
            pcoll
            | "FailureRows" >> beam.Map(failure_row)
            | "WriteFailuresFile" >> _WriteSortedJsonl(self._path, failure_sort_key)
        )
