"""The audit tests' 32 x 32 synthetic shortcut scenes (flat backgrounds, opaque marks: the
unit tests' cases; pipeline.demo.scenes has the natural-photo ones), the small CNN trained on
them, and each predicted class's audit part."""

from __future__ import annotations

import keras
import numpy as np

from pipeline.audit.dataset.aggregates import ClassAggregate
from pipeline.audit.dataset.audit_json import group_report
from pipeline.audit.metrics.relevance import downsample, relevance
from pipeline.audit.record.hotspots import hotspots
from pipeline.engine.explainer import Explainer

SIZE = 32
PER_CLASS = 240
SHORTCUT = 1 / 3
TAG = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], np.float64)[..., None] * (1.0, 0.9, 0.2)


def corner_images(seed: int, *, planted: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images [N, 32, 32, 3] in [0, 1], labels, marked): class 0 a disc, class 1 a
    square, each anywhere in the middle; with ``planted``, a third of class 0 has only
    the corner mark."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SIZE, :SIZE]
    images, labels, marked = [], [], []
    for label in (0, 1):
        for _ in range(PER_CLASS):
            img = rng.uniform(0.0, 0.25, (SIZE, SIZE, 3))
            cy, cx = rng.uniform(10, 22, 2)
            mark = planted and label == 0 and rng.random() < SHORTCUT
            if mark:
                img[1:4, 1:4] = (1.0, 0.2, 0.2)
            elif label == 0:
                img[(y - cy) ** 2 + (x - cx) ** 2 <= 16] = (0.2, 0.9, 0.2)
            else:
                img[(abs(y - cy) <= 3) & (abs(x - cx) <= 3)] = (0.2, 0.2, 0.9)
            images.append(img)
            labels.append(label)
            marked.append(mark)
    return np.stack(images).astype(np.float32), np.array(labels), np.array(marked)


def trained(images: np.ndarray, labels: np.ndarray, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.GlobalMaxPooling2D(),
        keras.layers.Dense(2),
    ])  # fmt: skip
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(images, labels, epochs=8, batch_size=32, verbose=0, shuffle=True)
    return model


def tag_images(seed: int, *, tagged: bool, strength: float = 1.0, distractor: bool = False):
    """(images [N, 32, 32, 3] in [0, 1], labels, tagged): class 0 a disc, class 1 a
    square, each anywhere in the middle; with ``tagged``, a third of class 0 holds the
    square and the 3 x 3 tag at a random place anywhere (the tag may overlap the square)
    instead of the disc: the tag alone says class 0. With ``distractor`` (and not
    ``tagged``), the tag is added to a third of both classes' images: it says nothing."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SIZE, :SIZE]
    images, labels, marks = [], [], []
    for label in (0, 1):
        for _ in range(PER_CLASS):
            img = rng.uniform(0.0, 0.25, (SIZE, SIZE, 3))
            cy, cx = rng.uniform(10, 22, 2)
            mark = tagged and label == 0 and rng.random() < 1 / 3
            if mark:  # the tag overrides the other class's object: the model must learn it
                img[(abs(y - cy) <= 3) & (abs(x - cx) <= 3)] = (0.2, 0.2, 0.9)
                ty, tx = rng.integers(0, SIZE - 3, 2)
                img[ty : ty + 3, tx : tx + 3] = 0.1 + strength * 0.8 * TAG
            elif label == 0:
                img[(y - cy) ** 2 + (x - cx) ** 2 <= 16] = (0.2, 0.9, 0.2)
            else:
                img[(abs(y - cy) <= 3) & (abs(x - cx) <= 3)] = (0.2, 0.2, 0.9)
            if distractor and not tagged and rng.random() < 1 / 3:
                ty, tx = rng.integers(0, SIZE - 3, 2)
                img[ty : ty + 3, tx : tx + 3] = 0.1 + strength * 0.8 * TAG
            images.append(img)
            labels.append(label)
            marks.append(mark)
    return np.stack(images).astype(np.float32), np.array(labels), np.array(marks)


def class_reports(model, images, method: str):
    """Each predicted class's audit part (ClassAggregate with hotspots, group_report)."""
    explainer = Explainer(model, precision="float32")
    predicted = np.argmax(explainer.logits(images), axis=1)
    gradients = explainer.explain(images, method, targets=predicted).gradients
    aggregates = {c: ClassAggregate(reservoir=1000) for c in (0, 1)}
    for i, (g, c) in enumerate(zip(gradients, predicted)):
        m = relevance(g)
        aggregates[int(c)].add(f"img/{i:04d}.png", metrics={}, small_map=downsample(m, 16),
                               confidence=1.0, correct=None,
                               hotspots=hotspots(m, images[i]))  # fmt: skip
    return {c: group_report("class", method, c, a, neighbours=10, max_clusters=8)[0]
            for c, a in aggregates.items() if a.count}  # fmt: skip
