"""ExplainImages: the public, composable PTransform (images in, saliency records out).

Drop it into any pipeline::

    explained = images | ExplainImages(model="examples/model/shapes_cnn.keras",
                                       methods=["vanilla", "guided"])
    explained.records   # PCollection[SaliencyRecord], views computed
    explained.failures  # PCollection[Failure]: inputs that could not be decoded/explained

Elements may be ``EncodedImage``, ``(key, encoded bytes)``, ``(key, pixels [H, W, C])`` or
either tuple with a third item, the int label. Writing is separate and explicit
(beam.sinks: WriteRecords, WriteArtifacts -> WriteManifest, WriteFailures), into the
directory each is given; the crash-safe staged publish of ``python -m pipeline run`` is
beam.run's, not this transform's.
"""

import dataclasses
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.pvalue import TaggedOutput

from pipeline.audit.record.curves import Faithfulness
from pipeline.beam.handler import SaliencyModelHandler
from pipeline.beam.prepare import DecodeImages
from pipeline.beam.sinks import GuardFinite
from pipeline.beam.tags import FAILURES
from pipeline.choices import DEFAULT_MAX_PIXELS, DEFAULT_PERCENTILE, DEFAULT_RESIZE, RECORD_VIEWS
from pipeline.config import BatchConfig, ModelConfig, SaliencyConfig
from pipeline.config.checks import check_faithfulness
from pipeline.elements import EncodedImage, Failure, SaliencyRecord
from pipeline.engine.model_geometry import check_methods, model_geometry
from pipeline.maps.views import compute_views
from pipeline.store.class_names import configured_class_names

__all__ = ["ExplainImages", "Explained", "to_encoded_image", "with_views"]


class Explained(NamedTuple):
    """ExplainImages' result."""

    records: beam.PCollection  # of SaliencyRecord, one per (image, target), views computed
    failures: beam.PCollection  # of Failure (stages decode, explain, numerics, input)


def to_encoded_image(element: Any) -> EncodedImage:
    """EncodedImage, (key, bytes | pixels) or (key, bytes | pixels, label) -> EncodedImage."""
    if isinstance(element, EncodedImage):
        return element
    if not isinstance(element, tuple) or len(element) not in (2, 3):
        raise TypeError(
            f"ExplainImages input: got {type(element).__name__}; each element must be an "
            "EncodedImage, (key, encoded bytes), (key, pixels [H, W, C]) or a 3-tuple with "
            "the int label last."
        )
    key, value = element[0], element[1]
    label = int(element[2]) if len(element) == 3 else -1
    if not isinstance(key, str):
        raise TypeError(f"ExplainImages input: the key must be a str, got {key!r}.")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return EncodedImage(key=key, source=key, data=bytes(value), label=label)
    if isinstance(value, np.ndarray):
        return EncodedImage(key=key, source=key, pixels=value, label=label)
    raise TypeError(
        f"ExplainImages input {key!r}: got a {type(value).__name__}; encoded image bytes "
        "or a numpy pixel array [H, W, C] is required."
    )


class _ToEncodedFn(beam.DoFn):
    """Input elements -> EncodedImage; an element of the wrong shape -> Failure "input"."""

    def process(self, element: Any):
        try:
            yield to_encoded_image(element)
        except (TypeError, ValueError) as exc:
            key = str(element[0]) if isinstance(element, tuple) and element else "?"
            yield TaggedOutput(FAILURES, Failure(key, key, "input", str(exc)))


def _split_results(result: PredictionResult):
    """PredictionResult(item, [SaliencyRecord | Failure, ...]) -> tagged outputs."""
    for out in result.inference:
        if isinstance(out, Failure):
            yield TaggedOutput(FAILURES, out)
        else:
            yield out


def with_views(record: SaliencyRecord, percentile: float) -> SaliencyRecord:
    """The record with its 2-D views per method (abs, positive, negative), computed once
    for every writer (TFRecord and artifacts)."""
    views = {
        method: compute_views(gradient, percentile=percentile, views=RECORD_VIEWS)
        for method, gradient in record.gradients.items()
    }
    return dataclasses.replace(record, views=views)


class ExplainImages(beam.PTransform):
    """PCollection of images -> :class:`Explained` (records, failures).

    ``model``: a keras.applications name, a model path, or a full ``ModelConfig``.
    ``saliency`` / ``batch``: config sections (defaults as in the config reference);
    ``**saliency_options`` override single saliency keys (``methods=[...]``,
    ``samples=50``, ``precision="auto"``, ...), checked now like a config file. ``resize``
    and ``max_pixels`` decode the inputs (as ``source.resize`` / ``source.max_pixels``).
    The model is loaded once here (fail fast, and its input size sizes the decoder) and
    once per worker process. ``faithfulness_steps`` > 0 adds each method's deletion /
    insertion curves (that many steps towards ``faithfulness_baseline``, in the model's
    input space) to ``faithfulness_fraction`` of the records (by key hash), computed with
    the model in the handler. ``audit_features`` adds the model's mid-level feature map
    (engine.features) to each record in memory, for the audit's row lines.
    """

    def __init__(
        self,
        *,
        model: str | ModelConfig,
        saliency: SaliencyConfig | None = None,
        batch: BatchConfig | None = None,
        resize: str = DEFAULT_RESIZE,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        percentile: float = DEFAULT_PERCENTILE,
        run_id: str = "",
        progress_every: int = 0,
        faithfulness_steps: int = 0,
        faithfulness_baseline: float = 0.0,
        faithfulness_fraction: float = 1.0,
        audit_features: bool = False,
        **saliency_options: Any,
    ) -> None:
        super().__init__()
        if isinstance(model, str):
            model = ModelConfig(name=model)
        if not isinstance(model, ModelConfig):
            raise TypeError(
                f"model: got {type(model).__name__}; a model name/path or a ModelConfig is "
                "required."
            )
        saliency = saliency or SaliencyConfig()
        if saliency_options:
            try:
                saliency = dataclasses.replace(saliency, **saliency_options)
            except TypeError as exc:
                known = [f.name for f in dataclasses.fields(SaliencyConfig)]
                raise TypeError(f"ExplainImages: {exc}; saliency options are {known}.") from exc
        self._model = model
        self._saliency = saliency
        self._batch = batch or BatchConfig()
        self._percentile = float(percentile)
        compute_views(np.zeros((1, 1, 1), np.float32), percentile=self._percentile)  # check
        geometry = model_geometry(model, class_names=configured_class_names(model.class_names))
        check_methods(model, saliency)
        self._decode = DecodeImages(
            input_size=geometry.input_size,
            channels=geometry.channels,
            resize_policy=resize,
            max_pixels=max_pixels,
        )
        check_faithfulness("", faithfulness_steps, faithfulness_baseline, faithfulness_fraction)
        self._handler = SaliencyModelHandler(
            model=model,
            saliency=saliency,
            batch=self._batch,
            run_id=run_id,
            progress_every=progress_every,
            features=audit_features,
            faithfulness=(
                Faithfulness(
                    steps=faithfulness_steps,
                    baseline=float(faithfulness_baseline),
                    fraction=float(faithfulness_fraction),
                )
                if faithfulness_steps
                else None
            ),
        )

    # No annotations on expand: Beam would read a NamedTuple return as a (wrong) type hint.
    def expand(self, pcoll):
        images = pcoll | "ToImages" >> beam.ParDo(_ToEncodedFn()).with_outputs(
            FAILURES, main="images"
        )
        decoded = images.images | "DecodeImages" >> self._decode
        explained = (
            decoded.items
            | "Explain" >> RunInference(self._handler)
            | "SplitResults" >> beam.FlatMap(_split_results).with_outputs(FAILURES, main="records")
        )
        guarded = explained.records | "GuardFinite" >> GuardFinite()
        records = guarded.records | "ComputeViews" >> beam.Map(with_views, self._percentile)
        failures = (
            images[FAILURES],
            decoded.failures,
            explained[FAILURES],
            guarded.failures,
        ) | "Failures" >> beam.Flatten()
        return Explained(records=records, failures=failures)
