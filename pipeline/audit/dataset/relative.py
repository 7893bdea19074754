"""Flags relative to the other classes: dataset-wide rules over the class parts, run once
every class is aggregated. A fixed fraction would not do for either: how much of a map
leaves the object, or sits in the border band, depends on the object's size, the image
size, the frame's width and the method; a class is compared with the others instead, by a
robust z (the others' median and median absolute deviation, scaled to a normal's spread,
floored at MIN_SPREAD) and a ratio to their median; only classes (and clusters) of at
least MIN_MEMBERS records take part.

**Frames** (``border``, relative): a cluster whose prototype puts FRAME_Z robust standard
deviations more of its mass in the border band (audit.metrics.spatial.BORDER_FRAME of each
side) than the other classes' maps do on average, and FRAME_RATIO times their median: a 3 px
frame at 224 px holds 0.4-0.55 of the map in the 22 px band, against ~0.2 for maps on
objects. Its causal test occludes and transplants the whole band.

**Context shortcuts**: a class whose maps look at the scene around its objects much more
than the other classes' maps do (a shared background, a typical setting). With boxes or
masks each row has ``energy_in_box`` (the share of the map's relevance on the object); a
class's mean share **outside** its objects is compared with the other classes' (of the
same method): the ``context`` flag is raised when it is at least CONTEXT_Z robust
standard deviations above their median, and when their maps put at least CONTEXT_RATIO
times more of their relevance on their objects (their median share inside the boxes over
the class's: a ratio of the outside shares would say little when every class's objects
are small and every map is mostly outside). Its members
are the class sample; its causal test (audit.causal.interventions) swaps backgrounds. Without boxes
there is no such flag.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import median_abs_deviation

CONTEXT_Z = 3.0
CONTEXT_RATIO = 1.5
MIN_SPREAD = 0.02  # a floor on the others' spread: identical classes do not make z infinite
MIN_CLASSES = 3  # other classes needed for a comparison
MIN_MEMBERS = 5  # records of a class (and of a flagged cluster) the rules need
METRIC = "energy_in_box"
FRAME_Z = 3.0
FRAME_RATIO = 1.5
FRAME_METRIC = "border_mass"


def robust_z(value: float, others: np.ndarray) -> tuple[float, float, float]:
    """(z of ``value`` against ``others``, their median, their spread)."""
    median = float(np.median(others))
    spread = max(float(median_abs_deviation(others, scale="normal")), MIN_SPREAD)
    return (value - median) / spread, median, spread


def relative_flags(parts: list[dict]) -> list[dict]:
    """``parts`` with the frame and context flags added (see the module docstring)."""
    return context_flags(frame_flags(parts))


def _classes(parts: list[dict]) -> list[int]:
    """The class parts with enough records to compare (MIN_MEMBERS): a class of two images
    says nothing about where its maps look."""
    return [i for i, p in enumerate(parts)
            if p["group"] == "class" and p["summary"].get("count", 0) >= MIN_MEMBERS]  # fmt: skip


def frame_flags(parts: list[dict]) -> list[dict]:
    """``parts`` with each class cluster's relative ``border`` flag added (new dicts)."""
    out = list(parts)
    classes = _classes(parts)
    for method in sorted({parts[i]["method"] for i in classes}):
        mine = [i for i in classes if parts[i]["method"] == method]
        means = {i: parts[i]["summary"]["metrics"].get(FRAME_METRIC) for i in mine}
        for i in mine:
            others = np.array([v for j, v in means.items() if j != i and v is not None])
            if len(others) < MIN_CLASSES:
                continue
            part, added = out[i], []
            fixed = {f["cluster"] for f in part["flags"] if f["kind"] == "border"}
            for cluster in part["clusters"]:
                value = cluster.get(FRAME_METRIC)
                if value is None or cluster["cluster"] in fixed:
                    continue
                if len(cluster["members"]) < MIN_MEMBERS:
                    continue
                z, median, spread = robust_z(value, others)
                if z < FRAME_Z or value < FRAME_RATIO * median:
                    continue
                added.append({"kind": "border", "method": method, "cluster": cluster["cluster"],
                              "members": list(cluster["members"]), "evidence": {
                                  "measured": "robust z of the cluster prototype's mass in "
                                  "the border frame against the other classes' mean maps'",
                                  "value": z, "threshold": FRAME_Z, "border_mass": value,
                                  "others_median": median, "others_spread": spread,
                                  "ratio": value / max(median, 1e-12),
                                  "ratio_threshold": FRAME_RATIO, "other_classes": len(others),
                                  "cluster_size": len(cluster["members"]),
                                  "class_sample": sum(len(c["members"]) for c in part["clusters"]),
                              }})  # fmt: skip
            if added:
                out[i] = {**part, "flags": [*part["flags"], *added]}
    return out


def outside_share(part: dict) -> float | None:
    """A class part's mean share of relevance outside its objects (None: no boxes)."""
    inside = part["summary"]["metrics"].get(METRIC)
    return None if inside is None else 1.0 - float(inside)


def context_flags(parts: list[dict]) -> list[dict]:
    """``parts`` with each class part's ``context`` flag added (new dicts; the others as
    they are)."""
    out = list(parts)
    classes = _classes(parts)
    for method in sorted({parts[i]["method"] for i in classes}):
        mine = [(i, outside_share(parts[i])) for i in classes if parts[i]["method"] == method]
        mine = [(i, v) for i, v in mine if v is not None]
        for i, value in mine:
            others = np.array([v for j, v in mine if j != i])
            if len(others) < MIN_CLASSES:
                continue
            z, median, spread = robust_z(value, others)
            ratio = (1.0 - median) / max(1.0 - value, 1e-12)  # on the object: theirs / its
            if z < CONTEXT_Z or ratio < CONTEXT_RATIO:
                continue
            part = out[i]
            members = sorted({k for c in part["clusters"] for k in c["members"]})
            flag = {"kind": "context", "method": method, "cluster": None, "members": members,
                    "evidence": {
                        "measured": "robust z of the class's mean share of relevance outside "
                        "its objects (boxes or masks) against the other classes'",
                        "value": z, "threshold": CONTEXT_Z, "outside_share": value,
                        "others_median": median, "others_spread": spread,
                        "ratio": ratio,
                        "ratio_threshold": CONTEXT_RATIO, "other_classes": len(others),
                        "class_sample": len(members),
                    }}  # fmt: skip
            out[i] = {**part, "flags": [*part["flags"], flag]}
    return out
