"""A SaliencyRecord as a reader of its TFRecord would see it (records.DecodedRecord), without
encoding it: what per-record work done in the job (the audit rows) reads, so that it gives
exactly what the same work on the published record gives. Floats go through float32 as the
TFRecord float lists store them; the image is there only when the records keep it."""

from __future__ import annotations

import numpy as np

from pipeline.elements import SaliencyRecord
from pipeline.store.records import DecodedRecord

__all__ = ["decoded_view"]


def _f32(value: float) -> float:
    return float(np.float32(value))


def decoded_view(record: SaliencyRecord, *, include_image: bool) -> DecodedRecord:
    """``records.parse(records.encode(record, include_image=...))``, less the encoding."""
    methods = tuple(record.gradients)
    return DecodedRecord(
        key=record.key,
        source=record.source,
        sha256=record.sha256,
        height=record.height,
        width=record.width,
        original_height=int(record.original_height),
        original_width=int(record.original_width),
        label=int(record.label),
        prediction_class=int(record.prediction_class),
        prediction_probability=_f32(record.prediction_probability),
        top_k_classes=np.asarray(record.top_k_classes, np.int64),
        top_k_probabilities=np.asarray(record.top_k_probabilities, np.float32),
        target_class=int(record.target_class),
        target_rank=int(record.target_rank),
        target_score=_f32(record.target_score),
        methods=methods,
        gradients={m: np.asarray(record.gradients[m]).astype(np.float16) for m in methods},
        maps={m: dict(v) for m, v in record.views.items()},
        image=np.asarray(record.pixels) if include_image else None,
        run_id=record.run_id,
        model_name=record.model_name,
        model_fingerprint=record.model_fingerprint,
        recomputed=int(record.recomputed),
        boxes=tuple(tuple(_f32(v) for v in box) for box in record.boxes),
        metadata=dict(record.metadata),
        faithfulness={
            m: {c: np.asarray(v, np.float32).astype(np.float64) for c, v in curves.items()}
            for m, curves in record.faithfulness.items()
        },
        prediction_name=record.prediction_name,
        target_name=record.target_name,
        features=record.features,
    )
