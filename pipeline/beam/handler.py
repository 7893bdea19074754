"""SaliencyModelHandler: the RunInference model handler, the one joint of Beam and engine.

Its jobs: hold the worker's Engine (model, explainer, class names), run a batch through it
into records, and keep one bad image from failing its batch. The model's geometry and class
names are engine.geometry's, probabilities and targets engine.targets', the deletion /
insertion curves audit.record.curves'.

RunInference loads the handler's model once per worker process (its threads share it) and
feeds it batches from BatchElements. The handler turns a batch of ImageItem into one
SaliencyRecord per (image, target); the gradient maths stays in pipeline.engine.

A batch that raises is retried image by image, so one bad image becomes one Failure and
its batch neighbours still get their maps; a batch that runs out of accelerator memory is
split in halves and retried (see _explain_split). An image whose logits or maps are not
finite after the engine's float32 recompute becomes a Failure at stage "numerics": no
NaN or Inf is ever handed to a sink.
"""

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from pipeline.audit.record.curves import Faithfulness, method_curves
from pipeline.beam.progress import REPORTER, Counters, report
from pipeline.config import BatchConfig, ModelConfig, SaliencyConfig
from pipeline.elements import Failure, ImageItem, SaliencyRecord
from pipeline.engine.explainer import Explainer
from pipeline.engine.from_config import explainer_options
from pipeline.engine.model_geometry import check_class_names, load_once
from pipeline.engine.models import LoadedModel
from pipeline.engine.targets import probabilities, resolve_targets, top_classes
from pipeline.store.class_names import class_name, configured_class_names

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Engine:
    """What a worker process holds: the loaded model and its explainer(s)."""

    loaded: LoadedModel
    explainer: Explainer
    saliency: SaliencyConfig
    counters: Counters = dataclasses.field(default_factory=Counters)
    faithfulness: Faithfulness | None = None
    class_names: tuple[str, ...] = ()
    features: bool = False  # the records carry the model's feature map (the audit's)


def make_explainer(loaded: LoadedModel, s: SaliencyConfig, *, pad_to: int) -> Explainer:
    """An Explainer for a loaded model with the saliency section's settings."""
    return Explainer(loaded.model, pad_to=pad_to, **explainer_options(loaded, s))


def load_engine(
    model: ModelConfig,
    saliency: SaliencyConfig,
    batch: BatchConfig,
    *,
    progress_every: int = 0,
    faithfulness: Faithfulness | None = None,
    features: bool = False,
) -> Engine:
    """Load the model and build the explainer (what each worker process does once)."""
    loaded = load_once(model)
    explainer = make_explainer(loaded, saliency, pad_to=batch.max_batch_size)
    if any("guided" in m for m in saliency.methods):
        explainer.guided_report()  # build the guided clone now: fail fast, once per process
    if not REPORTER.configured:  # a worker process of its own: log lines every N images
        REPORTER.reset(total=None, bar=False, every=progress_every)
    return Engine(
        loaded=loaded,
        explainer=explainer,
        saliency=saliency,
        faithfulness=faithfulness,
        features=features,
        class_names=check_class_names(
            configured_class_names(model.class_names), loaded.num_classes
        ),  # fmt: skip
    )


class SaliencyModelHandler(ModelHandler[ImageItem, Any, Engine]):
    """RunInference handler: ImageItem batches in, SaliencyRecord / Failure out."""

    def __init__(
        self,
        *,
        model: ModelConfig,
        saliency: SaliencyConfig,
        batch: BatchConfig,
        run_id: str,
        progress_every: int = 0,
        faithfulness: Faithfulness | None = None,
        features: bool = False,
    ) -> None:
        if not isinstance(features, bool):
            raise TypeError(f"features: got {features!r}; True or False is required.")
        if faithfulness is not None and not isinstance(faithfulness, Faithfulness):
            raise TypeError(
                f"faithfulness: got {type(faithfulness).__name__}; an "
                "audit.record.curves.Faithfulness or None is required."
            )
        super().__init__(
            min_batch_size=batch.min_batch_size,
            max_batch_size=batch.max_batch_size,
            # 0 means "no wait"; any positive number of seconds (0.5 too) is honoured.
            max_batch_duration_secs=batch.max_batch_duration_secs or None,
        )
        self._sections = (model, saliency, batch)
        self._run_id = run_id
        self._progress_every = progress_every
        self._faithfulness = faithfulness
        self._features = features

    def load_model(self) -> Engine:
        return load_engine(*self._sections, progress_every=self._progress_every,
                           faithfulness=self._faithfulness, features=self._features)  # fmt: skip

    def get_metrics_namespace(self) -> str:
        return "saliency"

    def get_num_bytes(self, batch: Sequence[ImageItem]) -> int:
        return sum(item.pixels.nbytes for item in batch)

    def run_inference(
        self,
        batch: Sequence[ImageItem],
        model: Engine,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        items = list(batch)
        try:
            outputs = _explain_split(items, model, self._run_id)
        except Exception:  # noqa: BLE001 - isolate the image that breaks the batch
            outputs = []
            for item in items:
                try:
                    outputs.extend(_explain_split([item], model, self._run_id))
                except Exception as exc:  # noqa: BLE001 - becomes a Failure, never a crash
                    outputs.append(
                        Failure(
                            key=item.key,
                            source=item.source,
                            stage="explain",
                            error=f"{type(exc).__name__}: {exc}",
                        )
                    )
        explained = {out.key for out in outputs if isinstance(out, SaliencyRecord)}
        recomputed = sum(out.recomputed for out in outputs if isinstance(out, SaliencyRecord))
        if recomputed:
            model.counters.recomputed.inc(recomputed)
        report(model.counters, done=len(explained))  # failures are counted where they land
        by_key: dict[str, list[Any]] = {}
        for out in outputs:
            by_key.setdefault(out.key, []).append(out)
        return [PredictionResult(item, by_key.get(item.key, [])) for item in items]


def _is_oom(exc: BaseException) -> bool:
    """Out of accelerator or host memory: TF's ResourceExhaustedError, MemoryError, or an
    error whose message is TF's allocator's ("OOM when allocating tensor ...": XLA and
    some kernels raise InternalError with it)."""
    return isinstance(exc, (tf.errors.ResourceExhaustedError, MemoryError)) or (
        "OOM when allocating" in str(exc)
    )


def _explain_split(
    items: list[ImageItem], engine: Engine, run_id: str
) -> list[SaliencyRecord | Failure]:
    """Explain a batch; on out-of-memory, halve it and retry each half."""
    try:
        return _explain(items, engine, run_id)
    except Exception as exc:
        if not _is_oom(exc) or len(items) == 1:
            raise
        _LOG.warning("out of memory on a batch of %d; splitting it in two", len(items))
        half = len(items) // 2
        return _explain_split(items[:half], engine, run_id) + _explain_split(
            items[half:], engine, run_id
        )


_FLOAT16_MAX = float(np.finfo(np.float16).max)


def _to_float16(gradient: np.ndarray) -> np.ndarray:
    """float16 for the record; finite values beyond float16's range saturate at +-65504
    instead of becoming Inf."""
    return np.clip(np.asarray(gradient, np.float32), -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16)


def _non_finite(logits: np.ndarray, rows: np.ndarray, per_method: dict[str, Any]) -> dict:
    """batch row -> what is not finite (logits, scores or the maps of some methods)."""
    bad: dict[int, set[str]] = {}
    for row in np.flatnonzero(~np.isfinite(logits).all(axis=-1)).tolist():
        bad.setdefault(row, set()).add("logits")
    for method, e in per_method.items():
        grads = np.asarray(e.gradients).reshape(len(rows), -1)
        finite = np.isfinite(grads).all(axis=-1) & np.isfinite(np.asarray(e.scores))
        for j in np.flatnonzero(~finite).tolist():
            bad.setdefault(int(rows[j]), set()).add(method)
    return bad


def _numerics_failure(item: ImageItem, what: set[str]) -> Failure:
    return Failure(
        key=item.key,
        source=item.source,
        stage="numerics",
        error=f"non-finite values (NaN/Inf) in {sorted(what)} after the float32 recompute; "
        "nothing written for this image",
    )


def _explain(items: list[ImageItem], engine: Engine, run_id: str) -> list[SaliencyRecord | Failure]:
    s = engine.saliency
    loaded = engine.loaded
    pixels = np.stack([item.pixels for item in items]).astype(np.float32)
    x = np.asarray(loaded.preprocess(pixels), dtype=np.float32)
    logits = engine.explainer.logits(x)
    probs = probabilities(logits, engine.explainer.head)
    labels = np.array([item.label for item in items], dtype=np.int64)
    classes = np.full(len(items), s.target_class, dtype=np.int64) if s.target == "class" else None
    rows, targets = resolve_targets(
        logits, s.target, labels=labels, classes=classes, k=s.top_k, probabilities=probs,
        threshold=s.threshold,
    )  # fmt: skip
    # The ranked list holds every explained class (all of an image's positive labels).
    top = top_classes(probs, max(5, s.top_k, int(np.bincount(rows).max(initial=0))))
    per_method = {m: engine.explainer.explain(x[rows], m, targets=targets) for m in s.methods}
    bad = _non_finite(logits, rows, per_method)
    f = engine.faithfulness
    chosen = [j for j, row in enumerate(rows.tolist()) if f and f.chosen(items[row].key)]
    curves = method_curves(
        engine.explainer.logits, x[rows[chosen]], targets[chosen],
        {m: np.asarray(e.gradients)[chosen] for m, e in per_method.items()}, f,
        chunk=engine.explainer.batch_size,
    ) if chosen else {}  # fmt: skip
    place = {j: i for i, j in enumerate(chosen)}  # row of the batch -> row of the curves
    feats = engine.explainer.features(x[rows]) if engine.features else None
    records: list[SaliencyRecord | Failure] = [
        _numerics_failure(items[row], what) for row, what in sorted(bad.items())
    ]
    seen: dict[int, int] = {}
    first = per_method[s.methods[0]]
    for j, (row, target) in enumerate(zip(rows.tolist(), targets.tolist())):
        if row in bad:
            continue
        item = items[row]
        rank = seen.get(row, 0)
        seen[row] = rank + 1
        records.append(
            SaliencyRecord(
                key=item.key,
                source=item.source,
                label=item.label,
                sha256=item.sha256,
                pixels=item.pixels,
                prediction_class=int(top[row, 0]),
                prediction_probability=float(probs[row, top[row, 0]]),
                top_k_classes=tuple(int(c) for c in top[row]),
                top_k_probabilities=tuple(float(probs[row, c]) for c in top[row]),
                target_class=int(target),
                target_rank=rank,
                target_score=float(first.scores[j]),
                gradients={m: _to_float16(e.gradients[j]) for m, e in per_method.items()},
                run_id=run_id,
                model_name=loaded.name,
                model_fingerprint=loaded.fingerprint,
                recomputed=int(sum(_recomputed_row(e, j) for e in per_method.values())),
                original_height=item.original_height,
                original_width=item.original_width,
                boxes=item.boxes,
                metadata=item.metadata,
                prediction_name=class_name(engine.class_names, int(top[row, 0])),
                target_name=class_name(engine.class_names, int(target)),
                faithfulness={
                    m: {mode: tuple(float(v) for v in c[place[j]]) for mode, c in by_mode.items()}
                    for m, by_mode in curves.items()
                }
                if j in place
                else {},
                features=None if feats is None else _to_float16(feats[j]),
            )
        )
    return records


def _recomputed_row(explanation: Any, row: int) -> int:
    flags = explanation.recomputed_rows
    return 0 if flags is None else int(flags[row])
