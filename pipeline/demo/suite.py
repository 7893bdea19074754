"""The shortcut suite: a model trained on shortcut scenes (demo.scenes), audited in this
process the way the job audits it (hotspots with the model's features per record, class
aggregates, the dataset-wide reference, the flag rules, the causal test with the object
boxes), scored against what was planted.

Per planted shortcut and method: the confirmed flags of its class, and the precision and
recall of their members against the class's planted images (those the model puts in the
class). Per clean class: its confirmed and unconfirmed flags. Used by
benchmarks/shortcut_suite.py and the tests.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.audit.causal.interventions import (
    CONFIRM_MEMBERS,
    CONFIRM_RECIPIENTS,
    CONFIRMABLE,
    Subject,
    confirm_flag,
)
from pipeline.audit.dataset.aggregates import ClassAggregate
from pipeline.audit.dataset.audit_json import group_report
from pipeline.audit.dataset.relative import relative_flags
from pipeline.audit.dataset.repeated_patterns import REFERENCE_MEMBERS, reference_entry
from pipeline.audit.metrics.localisation import localisation_metrics
from pipeline.audit.metrics.relevance import downsample, relevance
from pipeline.audit.metrics.spatial import spatial_metrics
from pipeline.audit.record.hotspots import hotspots
from pipeline.demo.scenes import Plant, Scenes
from pipeline.elements import key_priority
from pipeline.engine.explainer import Explainer

MAP_SIZE = 16


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One class and method of an audited suite model."""

    cls: int
    method: str
    plant: str  # "tag/ruler", "stamp/text", "frame", "background", or "clean"
    planted: int  # planted images the model puts in the class
    flags: tuple[dict, ...]  # every flag, with its "confirmation" where tested
    precision: float | None  # of the confirmed flags' members (None: none confirmed)
    recall: float | None

    @property
    def confirmed(self) -> int:
        return sum(bool(f.get("confirmation", {}).get("confirmed")) for f in self.flags)


def _name(plant: Plant | None) -> str:
    if plant is None:
        return "clean"
    return f"{plant.kind}/{plant.design}" if plant.kind in ("tag", "stamp") else plant.kind


def audit_suite(
    model, scenes: Scenes, methods: tuple[str, ...], *, samples: int = 50, seed: int = 0
) -> list[Outcome]:
    """Audit ``model`` (inputs: pixels / 255) on ``scenes`` with each method."""
    x = scenes.images.astype(np.float32) / 255.0
    explainer = Explainer(model, precision="float32", samples=samples, pad_to=64)
    logits = explainer.logits(x)
    predicted = np.argmax(logits, axis=1)
    features = explainer.features(x)
    keys = [f"scene/{i:05d}.png" for i in range(len(x))]
    objects = np.zeros(scenes.images.shape[:3], bool)
    for i, (y0, x0, y1, x1) in enumerate(scenes.boxes):
        objects[i, y0:y1, x0:x1] = True

    def logits_fn(images: np.ndarray) -> np.ndarray:
        return explainer.logits(images.astype(np.float32) / 255.0)

    index_of = {k: i for i, k in enumerate(keys)}
    pool = sorted(range(len(x)), key=lambda i: key_priority(keys[i]))[:256]
    out = []
    for method in methods:
        gradients = explainer.explain(x, method, targets=predicted).gradients
        maps = [relevance(g.astype(np.float16)) for g in gradients]
        spots = [hotspots(maps[i], scenes.images[i], None if features is None else features[i])
                 for i in range(len(x))]  # fmt: skip
        reference = tuple(sorted(reference_entry(key_priority(keys[i]), keys[i], predicted[i],
                                                 spots[i]) for i in range(len(x)))
                          [:REFERENCE_MEMBERS])  # fmt: skip
        aggregates: dict[int, ClassAggregate] = {}
        for i in range(len(x)):
            aggregates.setdefault(int(predicted[i]), ClassAggregate()).add(
                keys[i], metrics={**spatial_metrics(maps[i]),
                                  **localisation_metrics(maps[i], objects[i])},
                small_map=downsample(maps[i], MAP_SIZE), confidence=1.0,
                correct=None, hotspots=spots[i],
            )  # fmt: skip
        parts = [group_report("class", method, cls, aggregate, neighbours=10, max_clusters=8,
                              reference=reference)[0]
                 for cls, aggregate in sorted(aggregates.items())]  # fmt: skip
        for part in relative_flags(parts):
            cls = int(part["id"])
            for index, flag in enumerate(part["flags"]):
                if flag["kind"] not in CONFIRMABLE:
                    continue
                first = sorted(flag["members"], key=key_priority)[:CONFIRM_MEMBERS]
                members = [Subject(k, scenes.images[index_of[k]], cls, {method: maps[index_of[k]]},
                                   objects[index_of[k]]) for k in first]  # fmt: skip
                recipients = [Subject(keys[i], scenes.images[i], int(predicted[i]), {}, objects[i])
                              for i in pool if predicted[i] != cls
                              and keys[i] not in flag["members"]][:CONFIRM_RECIPIENTS]  # fmt: skip
                flag["confirmation"], _ = confirm_flag(flag, cls, members, recipients,
                                                       logits_fn, seed=seed + index)  # fmt: skip
            out.append(_outcome(cls, method, part["flags"], scenes, predicted, keys))
    return out


def _outcome(cls, method, flags, scenes: Scenes, predicted, keys) -> Outcome:
    plant = next((p for p in scenes.plants if p.cls == cls), None)
    truth: set[str] = set()
    if plant is not None:
        row = scenes.plants.index(plant)
        truth = {keys[i] for i in np.flatnonzero(scenes.planted[row] & (predicted == cls))}
    confirmed = {k for f in flags if f.get("confirmation", {}).get("confirmed")
                 for k in f["members"]}  # fmt: skip
    precision = recall = None
    if confirmed:
        precision = len(confirmed & truth) / len(confirmed)
        recall = len(confirmed & truth) / len(truth) if truth else None
    return Outcome(cls, method, _name(plant), len(truth), tuple(flags), precision, recall)
