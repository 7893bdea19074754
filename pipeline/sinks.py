"""Beam sinks: TFRecords, PNG artifacts, the manifest, dead letters and small JSON files,
and the crash-safe publishing of a run's outputs.

No gradient maths here: records.encode and render do the work, these transforms only
place the bytes. Every file goes through ``apache_beam.io.filesystems.FileSystems`` (or
``os`` for local paths), so local paths and object stores (gs://, s3://) behave the same.

Output layout under ``output_dir`` (what readers see)::

    records/saliency-<set>-SSSSS-of-NNNNN.tfrecord   the shards of committed shard sets
    artifacts/<safe_key(key)>/<method>_<view>[_t<class>].png   WriteArtifacts
    manifest.jsonl       one row per record, sorted by record_id: the commit point
    failures.jsonl       the inputs of the last run that failed, sorted by key (may be empty)
    summary.json         the last run's counts
    .staging/<set>/      one run attempt's unpublished outputs (hidden; removed)

The transforms write into the directory they are given. ``run`` points WriteRecords,
WriteManifest and WriteFailures at ``.staging/<set>/``, and :func:`publish` moves the
result into place once the pipeline succeeded: shards are renamed into ``records/`` first,
then ``manifest.jsonl`` is replaced (the commit), then shards that no manifest row
references are deleted. :func:`recover_output`, run before every run, removes what a
killed run left (staging directories, uncommitted shards, temp files), so a crash at any
moment followed by a rerun ends with each record exactly once.

Single files are written whole: locally to a temporary name (hidden, in the same directory
or in the staging directory) and renamed; on object stores directly (an object becomes
visible only when its upload completes). A reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import string
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline import maps, records, render
from pipeline.elements import Failure, SaliencyRecord

ARTIFACT_VIEWS = ("heatmap", "overlay", "grid")
RECORDS_DIR = "records"
RECORDS_PREFIX = "records/saliency"
RECORDS_SUFFIX = ".tfrecord"
MANIFEST_NAME = "manifest.jsonl"
FAILURES_NAME = "failures.jsonl"
SUMMARY_NAME = "summary.json"
STAGING_DIR = ".staging"
LOCK_NAME = ".lock"

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


def _is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) is None


def write_atomic(
    path: str,
    data: bytes | Iterable[bytes],
    *,
    mime_type: str = "",
    tmp_dir: str | None = None,
) -> str:
    """Write ``data`` (bytes, or an iterable of byte chunks) to ``path`` atomically.

    Local paths: a hidden temporary file (in ``tmp_dir``, default the target's directory,
    same file system) renamed over ``path``. Object stores: one direct write, after the
    data is complete in memory (an object is visible only once its upload finishes).
    Returns ``path``.
    """
    payload = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else b"".join(data)
    if not _is_local(path):
        with FileSystems.create(
            path,
            mime_type=mime_type or "application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,
        ) as handle:
            handle.write(payload)
        return path
    directory, name = os.path.split(path)
    os.makedirs(directory or ".", exist_ok=True)
    try:
        _replace_from_temp(path, payload, tmp_dir or directory or ".")
    except OSError as exc:
        if exc.errno != errno.EXDEV or not tmp_dir:
            raise
        _replace_from_temp(path, payload, directory or ".")  # tmp_dir on another device
    return path


def _replace_from_temp(path: str, payload: bytes, tmp_dir: str) -> None:
    os.makedirs(tmp_dir, exist_ok=True)
    tmp = os.path.join(tmp_dir, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


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

    Output: the written file names. Beam's file sink writes temporary files (under
    ``records/beam-temp-*``) and renames them at finalisation. ``run`` gives it the staging
    directory; :func:`publish` then moves the shards into the real ``records/``.
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
        "model_fingerprint": record.model_fingerprint,
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
        tmp_dir: str | None,
    ) -> None:
        self._output_dir = output_dir
        self._methods = methods
        self._views = views
        self._options = {"percentile": percentile, "alpha": alpha, "cmap": cmap}
        self._tmp_dir = tmp_dir

    def process(self, record: SaliencyRecord):
        artifacts: dict[str, dict[str, str]] = {}
        for method in self._methods:
            if method not in record.gradients:
                continue  # the manifest lists what exists
            artifacts[method] = {}
            for view in self._views:
                relative = artifact_path(record, method, view)
                data = render_artifact(record, method, view, **self._options)
                write_atomic(
                    _join(self._output_dir, relative),
                    data,
                    mime_type="image/png",
                    tmp_dir=self._tmp_dir,
                )
                artifacts[method][view] = relative
        yield manifest_entry(record, artifacts)


class WriteArtifacts(beam.PTransform):
    """PCollection[SaliencyRecord] -> PNGs per record and method; outputs manifest rows.

    Paths: ``{output_dir}/artifacts/{safe_key(key)}/{method}_{view}.png``, with
    ``_t{target_class}`` before ``.png`` for an image's further targets (target_rank > 0).
    Views: heatmap (abs map), overlay (abs map over the image), grid (five views).
    Writes are atomic and idempotent: a rerun writes the same bytes to the same paths.
    ``tmp_dir``: where local temporary files go (``run`` uses the staging directory, which
    the next run removes, so a killed run leaves no temp file among the artifacts).
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
        tmp_dir: str | None = None,
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
            output_dir, methods, views, float(percentile), float(alpha), cmap, tmp_dir
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


# --------------------------------------------------------------------------- numerics guard


def non_finite_fields(record: SaliencyRecord) -> list[str]:
    """The record's fields holding NaN or Inf (gradients per method, scores, probabilities)."""
    bad = [f"gradients[{m!r}]" for m, g in record.gradients.items() if not np.isfinite(g).all()]
    scalars = {
        "target_score": [record.target_score],
        "prediction_probability": [record.prediction_probability],
        "top_k_probabilities": list(record.top_k_probabilities),
    }
    bad += [name for name, values in scalars.items() if not np.isfinite(values).all()]
    return bad


class Guarded(NamedTuple):
    """GuardFinite's result: records safe to write, and the ones turned into failures."""

    records: beam.PCollection  # of SaliencyRecord
    failures: beam.PCollection  # of Failure (stage "numerics")


class _GuardFiniteFn(beam.DoFn):
    def process(self, record: SaliencyRecord):
        bad = non_finite_fields(record)
        if not bad:
            yield record
            return
        error = f"non-finite values (NaN/Inf) in {bad}; record not written"
        yield beam.pvalue.TaggedOutput(
            "failures", Failure(key=record.key, source=record.source, stage="numerics", error=error)
        )


class GuardFinite(beam.PTransform):
    """PCollection[SaliencyRecord] -> :class:`Guarded`: the last check before the sinks,
    so no NaN or Inf is ever written (the model handler already turns such images into
    failures; this guard catches whatever reaches the sinks another way)."""

    def expand(self, pcoll) -> Guarded:
        out = pcoll | "CheckFinite" >> beam.ParDo(_GuardFiniteFn()).with_outputs(
            "failures", main="records"
        )
        return Guarded(records=out.records, failures=out.failures)


# --------------------------------------------------------------------------- publishing

_SHARD_NAME = re.compile(r"^saliency-(?P<set>[A-Za-z0-9]+)-(?P<n>\d{5}-of-\d{5})\.tfrecord$")
_BEAM_SHARD_NAME = re.compile(r"^saliency-(?P<n>\d{5}-of-\d{5})\.tfrecord$")  # also pre-1.0
_TEMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{32}$")


class OutputBusyError(RuntimeError):
    """Another run holds the output directory."""


def new_shard_set() -> str:
    """A fresh id for one run attempt's records: UTC time (sortable) + 8 random hex."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + uuid.uuid4().hex[:8]


def staging_dir(output_dir: str, shard_set: str) -> str:
    """Where the attempt ``shard_set`` writes before :func:`publish`."""
    return _join(output_dir, f"{STAGING_DIR}/{shard_set}")


def shard_set_of(name: str) -> str | None:
    """The shard set of a published shard's file name, None for any other name."""
    m = _SHARD_NAME.match(name)
    return m["set"] if m else None


@contextlib.contextmanager
def output_lock(output_dir: str) -> Iterator[None]:
    """Hold ``output_dir`` for one run: a local directory is locked with flock (released
    when the process ends, even by SIGKILL); object stores are not locked (one run per
    output dir is then the scheduler's job)."""
    if not _is_local(output_dir):
        yield
        return
    import fcntl

    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, LOCK_NAME), "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise OutputBusyError(
                f"output.dir {output_dir!r} is in use by another run (lock {LOCK_NAME} held); "
                "wait for it to finish or choose another output.dir"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _list_files(directory: str) -> list[str]:
    """Every file below ``directory`` (recursive; [] when it does not exist)."""
    if _is_local(directory):
        found = []
        for dirpath, _, files in os.walk(directory):
            found += [os.path.join(dirpath, name) for name in files]
        return sorted(found)
    try:
        matched = FileSystems.match([directory.rstrip("/") + "/**"])[0].metadata_list
    except Exception:  # noqa: BLE001 - nothing there
        return []
    return sorted(m.path for m in matched if not m.path.endswith("/"))


def _delete_files(paths: Iterable[str]) -> int:
    n = 0
    for path in paths:
        try:
            if _is_local(path):
                os.remove(path)
            else:
                FileSystems.delete([path])
            n += 1
        except Exception:  # noqa: BLE001 - already gone is fine; anything else is raised
            if FileSystems.exists(path):
                raise
    return n


def _delete_tree(directory: str) -> int:
    files = _list_files(directory)
    if _is_local(directory):
        shutil.rmtree(directory, ignore_errors=True)
        return len(files)
    return _delete_files(files)


def _rename(source: str, destination: str) -> None:
    if _is_local(source):
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        os.replace(source, destination)
    else:
        FileSystems.rename([source], [destination])


def read_manifest(output_dir: str) -> list[dict]:
    """The committed manifest rows ([] before the first successful run)."""
    path = _join(output_dir, MANIFEST_NAME)
    if not FileSystems.exists(path):
        return []
    try:
        return read_jsonl(path)
    except ValueError as exc:
        raise ValueError(
            f"{path} is not valid JSON lines ({exc}); it is only ever replaced whole, so it "
            f"was edited by hand: restore it, or delete it together with {RECORDS_DIR}/ to "
            "start this output directory over"
        ) from exc


def _records_dir(output_dir: str) -> str:
    return _join(output_dir, RECORDS_DIR)


def _stale_record_files(output_dir: str, referenced: set[str]) -> list[str]:
    """Files in records/ that no committed row needs: shards of other sets, shards of the
    old unnamed layout, Beam temp files, our temp files. Other names are left alone."""
    root = _records_dir(output_dir).rstrip("/") + "/"
    stale = []
    for path in _list_files(root):
        rel = path[len(root) :] if path.startswith(root) else os.path.basename(path)
        name = rel.rsplit("/", 1)[-1]
        shard_set = shard_set_of(rel)
        if shard_set is not None:
            if shard_set not in referenced:
                stale.append(path)
        elif _BEAM_SHARD_NAME.match(rel) or rel.startswith("beam-temp-") or _TEMP_NAME.match(name):
            stale.append(path)
    return stale


def recover_output(output_dir: str) -> int:
    """Remove what interrupted runs left in ``output_dir``; returns the files removed.

    Staging directories (unpublished shards, Beam temp files, temp PNGs), shards that the
    committed manifest does not reference (a publish cut short) and temp files of
    interrupted writes. Committed outputs are not touched. Run it holding output_lock.
    """
    removed = _delete_tree(_join(output_dir, STAGING_DIR))
    referenced = {str(row.get("shard_set")) for row in read_manifest(output_dir)}
    removed += _delete_files(_stale_record_files(output_dir, referenced))
    if _is_local(output_dir) and os.path.isdir(output_dir):
        temps = [n for n in os.listdir(output_dir) if _TEMP_NAME.match(n)]
        removed += _delete_files(os.path.join(output_dir, n) for n in temps)
    return removed


@dataclasses.dataclass(frozen=True)
class Published:
    """What :func:`publish` did."""

    records_total: int  # manifest rows after publishing (earlier runs' included)
    shards: int  # shards of this attempt moved into records/
    superseded: int  # earlier rows replaced by this attempt's rows for the same key


def _shard_files(output_dir: str, shard_set: str) -> list[str]:
    root = _records_dir(output_dir).rstrip("/") + "/"
    return [p for p in _list_files(root) if shard_set_of(p[len(root) :]) == shard_set]


def _compact(output_dir: str, staging: str, shard_set: str, drop_keys: set[str]) -> str | None:
    """Copy the records of ``shard_set`` whose key is not in ``drop_keys`` into a new shard
    set (renamed into records/, not yet referenced); returns its id, None when no shard."""
    import tensorflow as tf
    from apache_beam.io.tfrecordio import _TFRecordUtil  # the format Beam's sink writes

    shards = _shard_files(output_dir, shard_set)
    if not shards:
        return None
    new_set = new_shard_set()
    tmp = _join(staging, f"compact/saliency-{new_set}-00000-of-00001{RECORDS_SUFFIX}")
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        for shard in shards:
            with FileSystems.open(shard, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                while (raw := _TFRecordUtil.read_record(f)) is not None:
                    feature = tf.train.Example.FromString(raw).features.feature["image/key"]
                    if feature.bytes_list.value[0].decode("utf-8") not in drop_keys:
                        _TFRecordUtil.write_record(out, raw)
    _rename(tmp, _join(output_dir, f"{RECORDS_DIR}/{tmp.rsplit('/', 1)[-1]}"))
    return new_set


def publish(output_dir: str, *, shard_set: str, carried: Sequence[dict]) -> Published:
    """Make the attempt staged in ``.staging/<shard_set>`` the output of ``output_dir``.

    ``carried``: committed rows to keep (incremental runs: those of the same model and
    settings; else none). Steps, each safe to be cut short (recover_output cleans up):

    1. earlier rows for keys this attempt recomputed are superseded: their shard sets are
       rewritten without those records (a new set; rare: a file changed under its key);
    2. the staged shards are renamed to records/saliency-<shard_set>-SSSSS-of-NNNNN;
    3. manifest.jsonl = carried + new rows, replaced atomically: the commit;
    4. failures.jsonl replaced; shards no row references deleted; staging deleted.
    """
    staging = staging_dir(output_dir, shard_set)
    new_rows = read_jsonl(_join(staging, MANIFEST_NAME))
    new_keys = {row["key"] for row in new_rows}
    kept = [dict(row) for row in carried if row["key"] not in new_keys]
    superseded = len(carried) - len(kept)
    kept_sets = {str(row["shard_set"]) for row in kept}
    for old_set in sorted({str(r["shard_set"]) for r in carried if r["key"] in new_keys}):
        new_set = _compact(output_dir, staging, old_set, new_keys) if old_set in kept_sets else None
        for row in kept:
            if new_set and row["shard_set"] == old_set:
                row["shard_set"] = new_set
    staged_root = _join(staging, RECORDS_DIR).rstrip("/") + "/"
    moved = 0
    for path in _list_files(staged_root):
        m = _BEAM_SHARD_NAME.match(path[len(staged_root) :])
        if m:
            name = f"saliency-{shard_set}-{m['n']}{RECORDS_SUFFIX}"
            _rename(path, _join(output_dir, f"{RECORDS_DIR}/{name}"))
            moved += 1
    rows = kept + new_rows
    write_sorted_jsonl(_join(output_dir, MANIFEST_NAME), rows, sort_key=manifest_sort_key)
    with FileSystems.open(
        _join(staging, FAILURES_NAME), compression_type=CompressionTypes.UNCOMPRESSED
    ) as handle:
        write_atomic(_join(output_dir, FAILURES_NAME), handle.read())
    referenced = {str(row["shard_set"]) for row in rows}
    _delete_files(_stale_record_files(output_dir, referenced))
    _delete_tree(staging)
    if _is_local(output_dir):
        with contextlib.suppress(OSError):  # only when empty: no other attempt's files
            os.rmdir(_join(output_dir, STAGING_DIR))
    return Published(records_total=len(rows), shards=moved, superseded=superseded)
