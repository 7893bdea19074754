"""Shortcuts wherever they sit: the per-class rule over the hotspots of each record
(audit/record/hotspots.py).

Per class (in the audit): the ``repeated_pattern`` rule looks for a group of members whose
hotspots match (similarity >= PATTERN_SIMILARITY), at least MIN_PATTERN_MEMBERS and
MIN_PATTERN_SHARE and at most MAX_PATTERN_SHARE of the class sample (a pattern in nearly
every member is read as the class's object, not a shortcut), clearly apart from the rest of
the class (MIN_CONTRAST) and holding a real part of the maps (MIN_HOTSPOT_SHARE). The
evidence names the members' mean similarity, the rest's (the control), how far the
hotspot moves (the spread of its places in image sides: ~0 for a fixed mark), the mean
relevance share of the windows and each member's matching window.
"""

from __future__ import annotations

import numpy as np

from pipeline.audit.dataset.feature_groups import class_rates, feature_groups
from pipeline.audit.record.hotspots import (
    HOTSPOT_FRACTION,
    context_pixels,
    feature_vector,
)

PATTERN_SIMILARITY = 0.8
MIN_CONTRAST = 0.5
# the group's windows hold at least this share of their maps' relevance on average: 8x a
# window's share of the area (1/64), so a pattern the maps barely touch is not flagged
MIN_HOTSPOT_SHARE = 8 * HOTSPOT_FRACTION**2
MIN_PATTERN_MEMBERS = 5
MIN_PATTERN_SHARE = 0.05
MAX_PATTERN_SHARE = 0.6
MAX_PATTERNS = 3
# two candidates sharing this much of their members (Jaccard) are one pattern: the first
# that passes the rule is flagged; a pattern inside a looser, larger candidate still is
SAME_GROUP = 0.5
# Feature descriptors (audit/dataset/feature_groups.py): the members' windows' mean pairwise cosine
# is at least FEATURE_SIMILARITY, and FEATURE_CONTRAST above the rest's mean cosine to them.
FEATURE_SIMILARITY = 0.6
FEATURE_CONTRAST = 0.4
# ... and the pattern is at least ENRICHMENT times as common among the class's members as
# among other classes' (a sample of them, at least MIN_FOREIGN members; fewer: no flag):
# what every class's maps share (the objects' edges, the border's padding) is no shortcut.
ENRICHMENT = 8.0
MIN_FOREIGN = 5
REFERENCE_MEMBERS = 1024  # the dataset-wide sample (smallest key hashes) classes are compared with


def _standardised(crops: np.ndarray) -> np.ndarray:
    """[n, d, d, C] -> [n, d*d*C]: each channel's mean removed, unit norm (a flat crop,
    one colour such as the inside of an object, stays 0: it matches nothing)."""
    flat = (crops - crops.mean(axis=(1, 2), keepdims=True)).reshape(len(crops), -1)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return np.where(norms > 1e-6, flat / np.maximum(norms, 1e-12), 0.0)


def similarities(contexts: np.ndarray, cells: int) -> np.ndarray:
    """[n, n] cosine similarity of the hotspots' patterns, each the best over shifts of
    up to half a window (contexts: [n, D, D, C] from :func:`hotspot`)."""
    r = cells // 2
    centres = _standardised(contexts[:, r : r + cells, r : r + cells])
    best = np.full((len(contexts), len(contexts)), -1.0)
    for a in range(2 * r + 1):
        for b in range(2 * r + 1):
            shifted = _standardised(contexts[:, a : a + cells, b : b + cells])
            best = np.maximum(best, centres @ shifted.T)
    best = np.maximum(best, best.T)
    empty = ~centres.any(axis=1)
    best[empty, :] = best[:, empty] = 0.0
    return best


def _pattern_groups(sim: np.ndarray, owner: np.ndarray, limit: int) -> list[np.ndarray]:
    """Groups of windows (index arrays) with near-identical patterns, one window per
    member, largest first: the window with neighbours at similarity >= PATTERN_SIMILARITY
    in the most members, and each such member's best-matching window; their members'
    windows are all removed before the next group."""
    similar = sim >= PATTERN_SIMILARITY
    free = np.ones(len(sim), bool)
    groups = []
    members = int(owner.max()) + 1 if len(owner) else 0
    while len(groups) < limit:
        best, best_count = None, 1
        for seed in np.flatnonzero(free):
            near = similar[seed] & free
            count = len(np.unique(owner[near]))
            if count > best_count:
                best, best_count = seed, count
        if best is None:
            break
        near = np.flatnonzero(similar[best] & free)
        pick = {owner[best]: best}
        for i in near:  # the member's window closest to the seed's pattern
            if owner[i] not in pick or (
                pick[owner[i]] != best and sim[best, i] > sim[best, pick[owner[i]]]
            ):
                pick[owner[i]] = i
        group = np.array(sorted(pick.values()))
        groups.append(group)
        free &= ~np.isin(owner, owner[group])
        if members and not free.any():
            break
    return groups


def _pixel_candidates(contexts: np.ndarray, owner: np.ndarray, cells: int) -> list[dict]:
    """Candidate patterns by pixels: groups of near-identical contexts under shifts
    (_pattern_groups), each {"windows", "value": the members' mean similarity to each
    other, "control": the rest's mean similarity to the group}."""
    sim = similarities(contexts, cells)
    sim[owner[:, None] == owner[None, :]] = 0.0  # a member's windows do not vote for it
    out = []
    for group in _pattern_groups(sim, owner, MAX_PATTERNS):
        value = float(sim[np.ix_(group, group)][~np.eye(len(group), dtype=bool)].mean())
        rest = ~np.isin(owner, owner[group]) & (sim.max(axis=1) > 0)
        per_member: dict[int, float] = {}
        for i in np.flatnonzero(rest):
            per_member[owner[i]] = max(per_member.get(owner[i], 0.0), float(sim[i, group].mean()))
        control = float(np.mean(list(per_member.values()))) if per_member else 0.0
        seed = group[int(np.argmax(sim[np.ix_(group, group)].sum(axis=1)))]
        out.append({"windows": group, "value": value, "control": control, "seed": seed})
    return out


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return len(np.intersect1d(a, b)) / max(1, len(np.union1d(a, b)))


def _descriptors(items: list[tuple[int, dict]]):
    """Each way the class's windows can be compared, in order: ("features", [n, C]) when
    most windows carry the model's features, then ("pixels", [n, D, D, C]) of the most
    common shape; each with the windows it keeps (lines of older runs, or records without
    an image, carry other kinds)."""
    vectors = [feature_vector(s) for _, s in items]
    sizes = [None if v is None else v.size for v in vectors]
    common = max(set(sizes), key=sizes.count)
    if common is not None:
        keep = [k for k, size in enumerate(sizes) if size == common]
        yield "features", np.stack([vectors[k] for k in keep]), keep
    contexts = [context_pixels(s) for _, s in items]
    shapes = [c.shape for c in contexts]
    shape = max(set(shapes), key=shapes.count)
    keep = [k for k, sh in enumerate(shapes) if sh == shape]
    yield "pixels", np.stack([contexts[k] for k in keep]), keep


MEASURED = {
    "features": "mean cosine of the model's standardised mid-level features at the members' "
    "saliency hotspots (a pattern the model sees, wherever it sits and whatever is behind it)",
    "pixels": "mean similarity of the image patches at the members' saliency hotspots (best "
    "over shifts; a pattern the model looks at wherever it sits)",
}
THRESHOLDS = {"features": (FEATURE_SIMILARITY, FEATURE_CONTRAST),
              "pixels": (PATTERN_SIMILARITY, MIN_CONTRAST)}  # fmt: skip


def _enrichment(group: np.ndarray, descriptors: np.ndarray, owner: np.ndarray, foreign) -> dict:
    """The pattern's share among the class's members and among other classes' (``foreign``:
    (vectors [m, C], owners [m])), and their ratio; {} without enough foreign members."""
    vectors, owners = foreign
    if len(np.unique(owners)) < MIN_FOREIGN:
        return {}
    inside, outside = class_rates(descriptors[group], descriptors, owner, vectors, owners)
    floor = 0.5 / len(np.unique(owners))  # half a member: a rate of 0 is "below one in m"
    return {"class_rate": inside, "other_classes_rate": outside,
            "enrichment": inside / max(outside, floor), "enrichment_threshold": ENRICHMENT,
            "other_classes_sample": int(len(np.unique(owners)))}  # fmt: skip


def reference_entry(priority: int, key: str, cls: int, spots: list[dict] | None) -> tuple:
    """One member of the dataset-wide reference sample: (priority, key, class, its hotspots'
    encoded features); the audit keeps the REFERENCE_MEMBERS smallest priorities."""
    return priority, key, int(cls), tuple(s["features"] for s in spots or () if s.get("features"))


def foreign_from(reference, cls: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The reference's members of classes other than ``cls`` as :func:`foreign_windows`."""
    return foreign_windows([[{"features": f} for f in entry[3]]
                            for entry in reference if entry[2] != cls])  # fmt: skip


def foreign_windows(spots: list[list[dict] | None]) -> tuple[np.ndarray, np.ndarray] | None:
    """Other classes' members' hotspots -> (feature vectors [m, C], their members), the
    reference :func:`repeated_pattern_flags` compares a class with (None: no features)."""
    rows = [(i, v) for i, member in enumerate(spots) if member for s in member
            if (v := feature_vector(s)) is not None]  # fmt: skip
    if not rows:
        return None
    size = max({v.size for _, v in rows}, key=[v.size for _, v in rows].count)
    rows = [(i, v) for i, v in rows if v.size == size]
    return np.stack([v for _, v in rows]), np.array([i for i, _ in rows])


def repeated_pattern_flags(
    method: str,
    keys: list[str],
    spots: list[list[dict] | None],
    foreign: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[dict]:
    """The ``repeated_pattern`` flags of one class and method (``spots``: each member's
    hotspots, aligned with ``keys``; None for lines written without them). Windows are
    compared by the model's features where the lines carry them (audit.feature_patterns),
    then by their pixels (a pattern either finds is flagged once, features first; a toy
    model's first layers see an opaque mark as their edges everywhere, a photo background
    hides a semi-transparent one from pixels). ``foreign``: other classes' windows
    (:func:`foreign_windows`), for the feature rule's enrichment test."""
    every = [(i, s) for i, member in enumerate(spots) if member for s in member]
    flags: list[dict] = []
    taken: list[np.ndarray] = []  # the flagged patterns' members: one flag per pattern
    for kind, descriptors, keep in _descriptors(every) if every else ():
        items = [every[k] for k in keep]
        flags += _kind_flags(method, keys, kind, descriptors, items, foreign, taken,
                             MAX_PATTERNS - len(flags))  # fmt: skip
    return flags


def _kind_flags(method, keys, kind, descriptors, items, foreign, taken, limit) -> list[dict]:
    """The flags one descriptor kind finds (at most ``limit``; ``taken`` grows)."""
    n = len({i for i, _ in items})
    if n < MIN_PATTERN_MEMBERS or limit <= 0:
        return []
    owner = np.array([i for i, _ in items])
    if kind == "features":
        candidates = feature_groups(descriptors, owner)
    else:
        candidates = _pixel_candidates(descriptors, owner, items[0][1]["cells"])
    similarity, contrast = THRESHOLDS[kind]
    smallest = max(MIN_PATTERN_MEMBERS, int(np.ceil(MIN_PATTERN_SHARE * n)))
    flags = []
    for c in candidates:
        group = c["windows"]
        owners = np.unique(owner[group])
        if any(_jaccard(owners, t) >= SAME_GROUP for t in taken):
            continue
        if not smallest <= len(group) <= MAX_PATTERN_SHARE * n:
            continue
        if c["value"] < similarity or c["value"] - c["control"] < contrast:
            continue  # not one pattern, or the rest of the class looks at it too
        share = float(np.mean([items[i][1]["share"] for i in group]))
        if kind == "pixels" and share < MIN_HOTSPOT_SHARE:  # the maps barely look at it
            continue
        enriched = {}
        if kind == "features":  # a pattern is a shortcut only against the other classes
            same = foreign is not None and foreign[0].shape[1:] == descriptors.shape[1:]
            enriched = _enrichment(group, descriptors, owner, foreign) if same else {}
            if not enriched or enriched["enrichment"] < ENRICHMENT:
                continue  # other classes' maps look at it too, or none to compare with
        where = np.array([[items[i][1]["y"], items[i][1]["x"]] for i in group])
        evidence = {
            "measured": MEASURED[kind],
            "descriptor": kind,
            "value": c["value"],
            "threshold": similarity,
            "control": c["control"],
            "contrast_threshold": contrast,
            "movement": float(where.std(axis=0).mean()),
            "hotspot_share": share,
            "share_threshold": MIN_HOTSPOT_SHARE,
            "example": keys[owner[c["seed"]]],
            "window_side": HOTSPOT_FRACTION,  # of the image side
            # each member's matching window: its centre, fractions of the side
            "windows": {keys[owner[i]]: [items[i][1]["y"], items[i][1]["x"]] for i in group},
            "cluster_size": int(len(group)),
            "class_sample": n,
            **enriched,
        }
        taken.append(owners)
        flags.append({"kind": "repeated_pattern", "method": method, "cluster": None,
                      "members": sorted(keys[owner[i]] for i in group),
                      "evidence": evidence})  # fmt: skip
        if len(flags) == limit:
            break
    return flags
