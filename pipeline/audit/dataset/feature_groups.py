"""Patterns in the model's feature space: which hotspot windows of a class show the same
thing to the model (the ``repeated_pattern`` rule of repeated_patterns.py, where row lines
carry the model's features at each window).

Each window's descriptor is the model's mid-level feature map averaged over the cells the
window covers (engine.features names the layer). Within a class, each channel is
standardised over the class's windows (what a window shows beyond what they all share) and
the rows are unit-normalised, so a cosine of 1 is "the same thing to the model". Candidate
patterns are k-means centres of those rows (scikit-learn) and SEEDS windows spread over the
class (a pattern k-means merges into a larger cluster keeps its own basin), each refined:
the members are those whose best window matches the centre at FEATURE_MATCH or more, the
centre is their matching windows' mean, REFINE times. ``class_rates`` measures a pattern
in the class and in other classes alike (the rule's enrichment test).
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

FEATURE_MATCH = 0.5  # a window's cosine to a pattern's centre that makes it a member
CANDIDATES = 8  # k-means centres tried per class and method
REFINE = 3  # centre updates from the members' matching windows
SEEDS = 48  # windows tried as centres besides k-means
MIN_WINDOWS = 5  # k-means gets one centre per this many windows, at most CANDIDATES


def standardised_features(vectors: np.ndarray) -> np.ndarray:
    """[n, C] -> each channel's mean over the class's windows removed and divided by its
    spread, then unit rows: what a window shows beyond what the class's windows share."""
    z = (vectors - vectors.mean(axis=0)) / (vectors.std(axis=0) + 1e-6)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return np.where(norms > 1e-9, z / np.maximum(norms, 1e-12), 0.0)


def _match(z: np.ndarray, owner: np.ndarray, centre: np.ndarray, members: int):
    """(each member's best cosine to ``centre``, the window that gives it; -1 where the
    member has no window)."""
    s = z @ (centre / max(float(np.linalg.norm(centre)), 1e-12))
    best = np.full(members, -1.0)
    window = np.full(members, -1)
    order = np.argsort(s)  # ascending: the last write per member is its best window
    best[owner[order]] = s[order]
    window[owner[order]] = order
    return best, window


def feature_groups(vectors: np.ndarray, owner: np.ndarray) -> list[dict]:
    """Candidate patterns in feature space (see the module docstring), most distinct first
    (near-copies of one pattern among them: the rule keeps the first that passes):
    {"windows": the members' matching windows (indices into ``vectors``), "value": their
    mean pairwise cosine, "control": the other members' mean cosine to them (each at its
    best window), "seed": the window most like the others}. ``owner``: each window's
    member (0..M-1)."""
    members = int(owner.max()) + 1
    z = standardised_features(vectors)
    k = int(min(CANDIDATES, max(1, len(z) // MIN_WINDOWS)))
    centres = list(KMeans(n_clusters=k, n_init=3, random_state=0).fit(z).cluster_centers_)
    # and windows spread over the class as seeds: a pattern k-means merges into a larger
    # cluster still has its own basin
    centres += list(z[np.linspace(0, len(z) - 1, min(SEEDS, len(z))).astype(int)])
    found = []
    for centre in centres:
        for _ in range(REFINE):
            best, window = _match(z, owner, centre, members)
            inside = best >= FEATURE_MATCH
            if not inside.any():
                break
            centre = z[window[inside]].mean(axis=0)
        best, window = _match(z, owner, centre, members)
        inside = best >= FEATURE_MATCH
        if inside.sum() < 2 or inside.all():
            continue
        windows = window[inside]
        pairs = z[windows] @ z[windows].T
        value = float(pairs[~np.eye(len(windows), dtype=bool)].mean())
        rest_best, _ = _match(z, owner, z[windows].mean(axis=0), members)
        rest = rest_best[~inside & (rest_best > -1)]
        # the rest's cosine to the unit mean, scaled back to a mean cosine to the windows
        control = float(rest.mean() * np.linalg.norm(z[windows].mean(axis=0))) if rest.size else 0.0
        seed = int(windows[int(np.argmax(pairs.sum(axis=1)))])
        found.append({"windows": np.sort(windows), "value": value, "control": control,
                      "seed": seed, "owners": np.flatnonzero(inside)})  # fmt: skip
    found.sort(key=lambda g: g["control"] - g["value"])
    return found


def class_rates(
    group: np.ndarray,
    own: np.ndarray,
    own_owner: np.ndarray,
    foreign: np.ndarray,
    foreign_owner: np.ndarray,
) -> tuple[float, float]:
    """(the share of the class's members, the share of other classes' members) whose best
    window matches a pattern as well as 90% of its own windows do. ``group``: the pattern's
    windows [g, C]; ``own`` / ``foreign``: the class's and the other classes' windows with
    their members. All are standardised by the channels' spread over both, so the pattern
    is measured the same way in every class."""
    pool = np.concatenate([own, foreign])
    mean, spread = pool.mean(axis=0), pool.std(axis=0) + 1e-6

    def unit(v: np.ndarray) -> np.ndarray:
        z = (v - mean) / spread
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

    centre = unit(group).mean(axis=0)
    centre /= max(float(np.linalg.norm(centre)), 1e-12)
    bar = float(np.quantile(unit(group) @ centre, 0.1))
    rates = []
    for windows, owner in ((own, own_owner), (foreign, foreign_owner)):
        best = np.full(int(owner.max()) + 1, -np.inf)
        np.maximum.at(best, owner, unit(windows) @ centre)
        rates.append(float(np.mean(best[np.isfinite(best)] >= bar)))
    return rates[0], rates[1]
