"""Which class each map explains: predicted, label, class or top_k."""

from typing import Any

import numpy as np

from pipeline.choices import TARGET_MODES
from pipeline.engine.checks import check_index_vector, check_int


def resolve_targets(
    logits: Any,
    mode: str,
    *,
    labels: Any = None,
    classes: Any = None,
    k: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Which class to explain for each image.

    Returns (rows, targets), both int64 [M]: ``rows`` index into the batch. "predicted" is
    the argmax, "label" the given labels, "class" the given per-image classes (or one class
    for all), "top_k" the k best classes per image, each image repeated k times in rank order.
    """
    scores = np.asarray(logits)
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise ValueError(f"logits: got shape {scores.shape}; [B, classes] is required.")
    batch, num_classes = scores.shape
    if mode not in TARGET_MODES:
        raise ValueError(
            f"target mode: got {mode!r}; allowed values are {list(TARGET_MODES)}. "
            "Fix: use 'predicted' to explain each image's top class."
        )
    k = check_int("k", k, 1)
    rows = np.arange(batch, dtype=np.int64)
    if mode == "predicted":
        return rows, np.argmax(scores, axis=1).astype(np.int64)
    if mode == "top_k":
        if k > num_classes:
            raise ValueError(f"k: got {k}; the model has only {num_classes} classes.")
        # Stable sort on -logits: ties keep the lower class first.
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.repeat(rows, k), order.reshape(-1).astype(np.int64)
    name, given = ("labels", labels) if mode == "label" else ("classes", classes)
    if given is None:
        raise ValueError(f"target mode {mode!r} needs {name}=...; got None.")
    targets = check_index_vector(name, given, batch)
    negative = np.flatnonzero(targets < 0)
    if negative.size:
        where = ", ".join(str(i) for i in negative[:20]) + (" ..." if negative.size > 20 else "")
        raise ValueError(
            f"{name}: images at positions [{where}] have no {name[:-1]} (value < 0). "
            "Fix: use target mode 'predicted' or provide a label for every image."
        )
    too_big = np.flatnonzero(targets >= num_classes)
    if too_big.size:
        raise ValueError(
            f"{name}: images at positions {too_big[:20].tolist()} have classes >= "
            f"{num_classes}, the model's number of classes."
        )
    return rows, targets


def softmax(logits: Any) -> np.ndarray:
    """Probabilities from logits (float64, stable)."""
    scores = np.asarray(logits, dtype=np.float64)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_classes(probs: np.ndarray, k: int) -> np.ndarray:
    """int [B, min(k, classes)]: the classes by decreasing probability (ties by class id)."""
    k = min(k, probs.shape[-1])
    return np.argsort(-probs, axis=-1, kind="stable")[:, :k]
