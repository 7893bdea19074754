"""The deletion / insertion curves the run adds to its records when the audit is on: which
records get them (by key hash, the same on every rerun) and the curves of every method's
maps through the run's own compiled model. The model is passed in as a callable; the maths
is audit/metrics/faithfulness.py's."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from pipeline.audit.metrics.faithfulness import Predict, deletion_and_insertion, end_scores
from pipeline.audit.metrics.relevance import relevance
from pipeline.elements import key_priority

__all__ = ["Faithfulness", "method_curves"]


@dataclasses.dataclass(frozen=True)
class Faithfulness:
    """The curves the model handler adds to each record (the audit section's settings)."""

    steps: int
    baseline: float
    fraction: float = 1.0  # of the records, chosen by key hash (the same on every rerun)

    def chosen(self, key: str) -> bool:
        """Whether this record's curves are computed."""
        return self.fraction >= 1.0 or key_priority(key) < self.fraction * 2.0**64


def method_curves(
    predict: Predict,
    images: np.ndarray,
    targets: np.ndarray,
    gradients: Mapping[str, np.ndarray],
    plan: Faithfulness,
    *,
    chunk: int,
) -> dict[str, dict[str, np.ndarray]]:
    """method -> {"deletion", "insertion"}: [n, steps + 1] target logits for ``images``
    (model space) ranked by each method's map (``gradients[method]``: [n, H, W, C]); the
    images and the baseline go through the model once for all methods."""
    if not len(images):
        return {}
    ends = end_scores(predict, images, plan.baseline)
    out = {}
    for method, grads in gradients.items():
        maps = np.stack([relevance(g) for g in grads])  # non-finite: 0
        out[method] = deletion_and_insertion(
            predict, images, maps, targets, steps=plan.steps, baseline=plan.baseline,
            chunk=chunk, ends=ends,
        )  # fmt: skip
    return out
