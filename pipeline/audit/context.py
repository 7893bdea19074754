"""Context shortcuts: a class whose maps look at the scene around its objects much more
than the other classes' maps do (a shared background, a typical setting), a dataset-wide
rule over the class parts, run once every class is aggregated.

With boxes or masks each row has ``energy_in_box`` (the share of the map's relevance on the
object); a class's mean share **outside** its objects is compared with the other classes'
(of the same method): the ``context`` flag is raised when it is at least CONTEXT_Z robust
standard deviations (the others' median absolute deviation, scaled to a normal's spread,
floored at MIN_SPREAD) above their median, and at least CONTEXT_RATIO times it. A fixed
fraction would not do: how much of a map leaves the object depends on the object's size,
the image size and the method. Its members are the class sample; its causal test
(audit.confirm) swaps backgrounds. Without boxes there is no such flag.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import median_abs_deviation

CONTEXT_Z = 3.0
CONTEXT_RATIO = 1.5
MIN_SPREAD = 0.02  # a floor on the others' spread: identical classes do not make z infinite
MIN_CLASSES = 3  # other classes with boxes needed for a comparison
METRIC = "energy_in_box"


def outside_share(part: dict) -> float | None:
    """A class part's mean share of relevance outside its objects (None: no boxes)."""
    inside = part["summary"]["metrics"].get(METRIC)
    return None if inside is None else 1.0 - float(inside)


def context_flags(parts: list[dict]) -> list[dict]:
    """``parts`` with each class part's ``context`` flag added (new dicts; the others as
    they are)."""
    out = list(parts)
    classes = [i for i, p in enumerate(parts) if p["group"] == "class"]
    for method in sorted({parts[i]["method"] for i in classes}):
        mine = [(i, outside_share(parts[i])) for i in classes if parts[i]["method"] == method]
        mine = [(i, v) for i, v in mine if v is not None]
        for i, value in mine:
            others = np.array([v for j, v in mine if j != i])
            if len(others) < MIN_CLASSES:
                continue
            median = float(np.median(others))
            spread = max(float(median_abs_deviation(others, scale="normal")), MIN_SPREAD)
            z = (value - median) / spread
            if z < CONTEXT_Z or value < CONTEXT_RATIO * median:
                continue
            part = parts[i]
            members = sorted({k for c in part["clusters"] for k in c["members"]})
            flag = {"kind": "context", "method": method, "cluster": None, "members": members,
                    "evidence": {
                        "measured": "mean share of the class's relevance outside its objects "
                        "(boxes or masks), against the other classes'",
                        "value": value, "threshold": CONTEXT_Z, "others_median": median,
                        "others_spread": spread, "z": z, "ratio": value / max(median, 1e-12),
                        "ratio_threshold": CONTEXT_RATIO, "other_classes": len(others),
                        "class_sample": len(members),
                    }}  # fmt: skip
            out[i] = {**part, "flags": [*part["flags"], flag]}
    return out
