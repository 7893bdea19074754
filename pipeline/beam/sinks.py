"""Beam sinks: TFRecords, PNG artifacts, the manifest, dead letters, and the last
numerics guard before them.

No gradient maths here: records.encode and render do the work, these transforms only
place the bytes, through :mod:`pipeline.store` (atomic files in store.files, every path
in store.layout, the crash-safe publish of a run's staged outputs in store.publish). They write
into the directory they are given: ``run`` gives WriteRecords, WriteManifest and
WriteFailures the attempt's staging directory and WriteArtifacts the output directory.
"""

import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam import coders
from apache_beam.io.filesystem import CompressionTypes

from pipeline.beam.tags import FAILURES
from pipeline.choices import ARTIFACT_VIEWS, DEFAULT_PERCENTILE, GRADIENT_ENCODINGS
from pipeline.elements import Failure, SaliencyRecord
from pipeline.maps import render
from pipeline.maps import views as maps
from pipeline.store import records
from pipeline.store.files import write_atomic, write_sorted_jsonl
from pipeline.store.gradient_codec import check_encoding
from pipeline.store.layout import (
    FAILURES_NAME,
    MANIFEST_NAME,
    RECORDS_PREFIX,
    RECORDS_SUFFIX,
    artifact_path,
    join_path,
)
from pipeline.store.publish import manifest_sort_key
from pipeline.store.tfrecord_sink import RecordSink

_METHOD_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


# --------------------------------------------------------------------------- records


def encode_record(
    record: SaliencyRecord, include_image: bool, percentile: float, gradient_encoding: str
) -> bytes:
    """records.encode for beam.Map (positional options keep the call picklable)."""
    return records.encode(
        record,
        include_image=include_image,
        percentile=percentile,
        gradient_encoding=gradient_encoding,
    )


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
        percentile: float = DEFAULT_PERCENTILE,
        gradient_encoding: str = GRADIENT_ENCODINGS[0],
    ) -> None:
        super().__init__()
        if int(num_shards) < 0:
            raise ValueError(f"num_shards={num_shards!r}: use 0 (runner decides) or a count > 0.")
        self._prefix = join_path(output_dir, RECORDS_PREFIX)
        self._num_shards = int(num_shards)
        self._include_image = bool(include_image)
        self._percentile = float(percentile)
        self._encoding = check_encoding(gradient_encoding, field="gradient_encoding")

    def expand(self, pcoll):
        return (
            pcoll
            | "EncodeRecords"
            >> beam.Map(encode_record, self._include_image, self._percentile, self._encoding)
            | "WriteTFRecords"
            >> beam.io.Write(
                RecordSink(
                    self._prefix,
                    coders.BytesCoder(),
                    RECORDS_SUFFIX,
                    self._num_shards,
                    None,
                    CompressionTypes.UNCOMPRESSED,
                )
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
        "prediction_name": record.prediction_name,
        "target_class": int(record.target_class),
        "target_name": record.target_name,
        "target_rank": int(record.target_rank),
        "target_score": float(record.target_score),
        "model_fingerprint": record.model_fingerprint,
        "artifacts": artifacts,
    }


def artifact_scale(height: int, width: int, min_size: int) -> int:
    """The integer upscale factor that brings an image's shorter side to at least
    ``min_size`` pixels: ceil(min_size / min(height, width)), and 1 when it already is."""
    shorter = min(int(height), int(width))
    if shorter < 1:
        raise ValueError(f"image size {height}x{width} is empty: nothing to render.")
    return max(1, -(-int(min_size) // shorter))


def grid_info(record: SaliencyRecord, method: str) -> str:
    """The grid's info line: key, predicted class (and its name) and probability, the
    explained class when it is another, method."""

    def named(class_id: int, name: str) -> str:
        return f"{class_id} {name}" if name else str(class_id)

    target = (
        ""
        if record.target_class == record.prediction_class
        else f" | explained: class {named(record.target_class, record.target_name)}"
    )
    return (
        f"{record.key} | class {named(record.prediction_class, record.prediction_name)}, "
        f"p = {record.prediction_probability:.3f}{target} | {method}"
    )


def render_artifacts(
    record: SaliencyRecord,
    method: str,
    views: Sequence[str],
    *,
    percentile: float,
    alpha: float,
    cmap: str,
    scale: int = 1,
) -> dict[str, bytes]:
    """PNG bytes of the artifact ``views`` of one record and method, each panel upscaled by
    the integer ``scale`` (nearest neighbour). The 2-D maps are normalised once and shared
    by all views (the heatmap, the overlay and the grid all show the same abs map)."""
    unknown = [v for v in views if v not in ARTIFACT_VIEWS]
    if unknown:
        raise ValueError(f"artifact views {unknown!r} are unknown: allowed are {ARTIFACT_VIEWS}.")
    pixels = np.asarray(record.pixels)
    two_d = record.views.get(method)
    if two_d is None:  # a record from outside ExplainImages: compute what is drawn
        wanted = render.GRID_VIEWS if "grid" in views else ("abs",)
        gradient = np.asarray(record.gradients[method])
        two_d = maps.compute_views(gradient, percentile=percentile, views=wanted)
    out = {}
    for view in views:
        if view == "grid":
            panels = render.panels_from_views(pixels, two_d, cmap=cmap)
            scales = maps.view_scales(np.asarray(record.gradients[method]), percentile)
            out[view] = render.annotated_grid_png(
                panels, info=grid_info(record, method), scales=scales, cmap=cmap, scale=scale
            )
        elif view == "heatmap":
            out[view] = render.heatmap_png(two_d["abs"], cmap=cmap, scale=scale)
        else:  # overlay
            out[view] = render.overlay_png(pixels, two_d["abs"], alpha, cmap=cmap, scale=scale)
    return out


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
        min_artifact_size: int,
    ) -> None:
        self._output_dir = output_dir
        self._methods = methods
        self._views = views
        self._options = {"percentile": percentile, "alpha": alpha, "cmap": cmap}
        self._tmp_dir = tmp_dir
        self._min_size = min_artifact_size

    def process(self, record: SaliencyRecord):
        artifacts: dict[str, dict[str, str]] = {}
        height, width = np.shape(record.pixels)[:2]
        scale = artifact_scale(height, width, self._min_size)
        for method in self._methods:
            if method not in record.gradients:
                continue  # the manifest lists what exists
            artifacts[method] = {}
            rendered = render_artifacts(record, method, self._views, scale=scale, **self._options)
            for view, data in rendered.items():
                relative = artifact_path(record, method, view)
                write_atomic(
                    join_path(self._output_dir, relative),
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
    ``min_artifact_size``: every panel is upscaled (nearest neighbour) by the integer
    :func:`artifact_scale` that brings the image's shorter side to at least that many
    pixels (the default 1 keeps the model-input size).
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
        percentile: float = DEFAULT_PERCENTILE,
        alpha: float = 0.8,
        cmap: str = "inferno",
        tmp_dir: str | None = None,
        min_artifact_size: int = 1,
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
        size = min_artifact_size
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 4096:
            raise ValueError(
                f"min_artifact_size={size!r}: give a whole number of pixels, 1 to 4096 "
                "(1: artifacts at the model-input size)."
            )
        maps.normalise(np.zeros(1), percentile)  # validates percentile now, not on a worker
        self._dofn = _RenderArtifacts(
            output_dir, methods, views, float(percentile), float(alpha), cmap, tmp_dir, size
        )

    def expand(self, pcoll):
        return pcoll | "RenderArtifacts" >> beam.ParDo(self._dofn)


# --------------------------------------------------------------------------- manifests


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
        self._path = join_path(output_dir, MANIFEST_NAME)

    def expand(self, pcoll):
        return pcoll | "WriteManifestFile" >> _WriteSortedJsonl(self._path, manifest_sort_key)


class WriteFailures(beam.PTransform):
    """PCollection[Failure] -> output_dir/failures.jsonl, sorted by key; always written."""

    def __init__(self, output_dir: str) -> None:
        super().__init__()
        self._path = join_path(output_dir, FAILURES_NAME)

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
            FAILURES, Failure(key=record.key, source=record.source, stage="numerics", error=error)
        )


class GuardFinite(beam.PTransform):
    """PCollection[SaliencyRecord] -> :class:`Guarded`: the last check before the sinks,
    so no NaN or Inf is ever written (the model handler already turns such images into
    failures; this guard catches whatever reaches the sinks another way)."""

    def expand(self, pcoll):
        out = pcoll | "CheckFinite" >> beam.ParDo(_GuardFiniteFn()).with_outputs(
            FAILURES, main="records"
        )
        return Guarded(records=out.records, failures=out[FAILURES])
