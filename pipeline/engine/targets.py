"""Which class each map explains (predicted, label, class, top_k, labels_above), and the
head's probabilities (softmax over the classes, or a sigmoid per class)."""

from typing import Any

import numpy as np

from pipeline.choices import DEFAULT_THRESHOLD, HEADS, TARGET_MODES
from pipeline.engine.checks import check_index_vector, check_int


def resolve_targets(
    logits: Any,
    mode: str,
    *,
    labels: Any = None,
    classes: Any = None,
    k: int = 1,
    probabilities: Any = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """Which class to explain for each image.

    Returns (rows, targets), both int64 [M]: ``rows`` index into the batch. "predicted" is
    the argmax, "label" the given labels, "class" the given per-image classes (or one class
    for all), "top_k" the k best classes per image, each image repeated k times in rank
    order, "labels_above" every class whose ``probabilities`` reach ``threshold``, by
    decreasing probability (an image with none: its top class, so none goes unexplained).
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
    if mode == "labels_above":
        return _labels_above(scores, probabilities, threshold)
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


def _labels_above(logits: np.ndarray, probabilities: Any, threshold: float):
    if probabilities is None:
        raise ValueError("target mode 'labels_above' needs probabilities=...; got None.")
    probs = np.asarray(probabilities)
    if probs.shape != logits.shape:
        raise ValueError(f"probabilities: got shape {probs.shape}; {logits.shape} is required.")
    order = np.argsort(-probs, axis=1, kind="stable")
    counts = np.maximum((probs >= threshold).sum(axis=1), 1)
    rows = np.repeat(np.arange(len(probs), dtype=np.int64), counts)
    targets = np.concatenate([order[i, :n] for i, n in enumerate(counts)]) if len(probs) else []
    return rows, np.asarray(targets, dtype=np.int64)


def resolve_head(setting: str, detected: str | None) -> str:
    """model.head ("auto", "softmax", "sigmoid") and the stripped head's kind -> the
    probability rule: auto is sigmoid where the model ended in a sigmoid, else softmax."""
    if setting not in HEADS:
        raise ValueError(
            f"head: got {setting!r}; allowed values are {list(HEADS)}. Fix: 'sigmoid' for a "
            "multi-label model that outputs logits, else 'auto'."
        )
    if setting == "auto":
        return "sigmoid" if detected == "sigmoid" else "softmax"
    return setting


def probabilities(logits: Any, head: str) -> np.ndarray:
    """Per-class probabilities (float64): softmax over the classes, or sigmoid per class."""
    if head == "sigmoid":
        scores = np.asarray(logits, dtype=np.float64)
        return 0.5 * (1.0 + np.tanh(0.5 * scores))  # sigmoid without exp overflow
    return softmax(logits)


def softmax(logits: Any) -> np.ndarray:
    """Probabilities from logits (float64, stable)."""
    scores = np.asarray(logits, dtype=np.float64)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_classes(probs: np.ndarray, k: int) -> np.ndarray:
    """int [B, min(k, classes)]: the classes by decreasing probability (ties by class id)."""
    k = min(k, probs.shape[-1])
    return np.argsort(-probs, axis=-1, kind="stable")[:, :k]
