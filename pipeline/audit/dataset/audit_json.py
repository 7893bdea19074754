"""From per-group aggregates to the audit's public contract (audit.json), no Beam:
strategies and flags per (class, method), localisation and faithfulness per method, the
sanity check, the PNG maps.

audit.json::

    {"methods": {m: {"localisation": {"pointing", "energy_in_box", "rank_accuracy",
                                      "box_iou", "box_correct", "n"},
                     "faithfulness": {"deletion_auc", "insertion_auc", "n", "steps",
                                      "baseline", "score", "deletion_curve",
                                      "insertion_curve"} | null,
                     "sanity": {"layers", "correlations", "depends_on_weights",
                                "statistics": {"spearman_abs", "spearman_signed", "ssim"},
                                "verdicts",
                                "threshold", "images", "caveat"} | null}},
     "classes": {"<class explained>": {"count", "accuracy", "mean_confidence",
                                       "flags": [{"kind", "method", "cluster", "members",
                                                  "evidence"}],
                                       "clusters": [{"method", "cluster", "size",
                                                     "members", "prototype"}],
                                       "methods": {m: {"metrics", "histograms",
                                                       "mean_map", "mean_map_values"}}}},
     "labels": {"<true label>": {"count", "accuracy", "mean_confidence", "methods"}},
     "errors": {"<label>-<prediction>": {"label", "prediction", "count",
                                         "mean_confidence", "methods"}},
     "slices": {"<column>=<value>[,...]": {"count", "accuracy", "mean_confidence", "flags",
                                           "clusters", "methods"}},
     "records": n, "map_size": s}

Faithfulness is null for a method whose records carry no curves (the audit was off when
they were written); sanity is null when ``audit.sanity_samples`` is 0.
"""

import numpy as np

from pipeline.audit.dataset.aggregates import ClassAggregate
from pipeline.audit.dataset.flags import class_flags
from pipeline.audit.dataset.repeated_patterns import foreign_from, repeated_pattern_flags
from pipeline.audit.dataset.strategies import discover
from pipeline.audit.metrics.spatial import border_mass
from pipeline.maps.render import heatmap_png
from pipeline.store.layout import audit_map_path

GROUPS = ("class", "label", "error", "slice")
DISCOVERED = ("class", "slice")  # the groups with strategies (clusters) and flags
LOCALISATION = ("pointing", "energy_in_box", "rank_accuracy", "box_iou", "box_correct")
FAITHFULNESS = ("deletion_auc", "insertion_auc")
_PNG_SIZE = 128  # prototypes and mean maps are drawn at least this large


def _png(m: np.ndarray) -> bytes:
    peak = float(m.max())
    scaled = m / peak if peak > 0 else m
    return heatmap_png(scaled.astype(np.float32), scale=max(1, _PNG_SIZE // m.shape[0]))


def _values(m: np.ndarray | None) -> list[list[float]] | None:
    """The mean map itself, 4 significant digits: what drift compares between audits."""
    return None if m is None else [[float(f"{v:.4g}") for v in row] for row in m.tolist()]


def error_id(label: int, prediction: int) -> str:
    """The key of an error group in audit.json and its PNG names."""
    return f"{label}-{prediction}"


def group_report(
    group: str,
    method: str,
    group_id: int | str,
    aggregate: ClassAggregate,
    *,
    neighbours: int,
    max_clusters: int,
    reference: tuple = (),
) -> tuple[dict, dict[str, bytes]]:
    """(one group-and-method part of audit.json, {relative path: PNG bytes}); strategies
    and flags for classes and slices. ``reference``: the method's dataset-wide sample of
    members (repeated_patterns.reference_entry), that a class's patterns are compared with."""
    mean_path = audit_map_path(method, group_id, group=group)
    files = {mean_path: _png(aggregate.mean_map())}
    part = {
        "group": group,
        "method": method,
        "id": group_id,
        "summary": aggregate.summary(),
        "curves": aggregate.mean_curves(),
        "mean_map": mean_path,
        "mean_map_values": _values(aggregate.mean_map()),
        "clusters": [],
        "flags": [],
    }
    keys, maps = aggregate.sample()
    if group in DISCOVERED and len(keys) >= 3:
        found = discover(maps, neighbours=neighbours, max_clusters=max_clusters)
        for cluster, prototype in enumerate(found.prototypes):
            path = audit_map_path(method, group_id, cluster, group=group)
            files[path] = _png(prototype)
            members = [k for k, label in zip(keys, found.labels) if label == cluster]
            part["clusters"].append({"method": method, "cluster": cluster,
                                     "size": len(members), "members": members,
                                     "prototype": path,
                                     "border_mass": border_mass(prototype)})  # fmt: skip
        part["flags"] = class_flags(method, found, keys, aggregate.mean_map(), maps)
        if group == "class":  # its object ceiling reads "most of one class": not a slice's
            foreign = foreign_from(reference, int(group_id))
            part["flags"] += repeated_pattern_flags(method, keys, aggregate.member_hotspots(),
                                                    foreign)  # fmt: skip
    return part, files


def _weighted(parts: list[dict], names: tuple[str, ...]) -> dict:
    """Means over every record of the parts (each part's mean weighted by its n)."""
    out = {}
    for name in names:
        pairs = [(p["summary"]["metrics"][name], p["summary"]["n"][name])
                 for p in parts if p["summary"]["n"].get(name)]  # fmt: skip
        n = sum(k for _, k in pairs)
        out[name] = sum(v * k for v, k in pairs) / n if n else None
    out["n"] = max((sum(p["summary"]["n"].get(x, 0) for p in parts) for x in names), default=0)
    return out


def _mean_curve(parts: list[dict], mode: str) -> list[float] | None:
    found = [p["curves"][mode] for p in parts if mode in p["curves"]]
    if not found or len({len(c["curve"]) for c in found}) != 1:
        return None
    n = sum(c["n"] for c in found)
    return (sum(np.asarray(c["curve"]) * c["n"] for c in found) / n).tolist()


def _faithfulness(parts: list[dict], baseline: float) -> dict | None:
    out = _weighted(parts, FAITHFULNESS)
    if not out["n"]:
        return None
    deletion = _mean_curve(parts, "deletion")
    out.update(
        steps=len(deletion) - 1 if deletion else None,
        baseline=baseline,
        score="target logit",
        x="fraction of pixels removed (deletion) or inserted (insertion), k / steps",
        deletion_curve=deletion,
        insertion_curve=_mean_curve(parts, "insertion"),
    )
    return out


def _entry(part: dict) -> dict:
    s = part["summary"]
    return {"count": s["count"], "accuracy": s["accuracy"], "mean_confidence": s["mean_confidence"],
            "methods": {}}  # fmt: skip


def assemble(
    parts: list[dict],
    *,
    records: int,
    map_size: int,
    sanity: dict | None = None,
    baseline: float = 0.0,
) -> dict:
    """audit.json from every (group, id, method) part; ``sanity``: method -> its panel."""
    tables: dict[str, dict[str, dict]] = {group: {} for group in GROUPS}
    for part in sorted(parts, key=lambda p: (p["group"], str(p["id"]), p["method"])):
        key = str(part["id"])
        entry = tables[part["group"]].setdefault(key, _entry(part))
        if part["group"] in DISCOVERED:
            entry.setdefault("flags", [])
            entry.setdefault("clusters", [])
            entry["flags"] += part["flags"]
            entry["clusters"] += part["clusters"]
        if part["group"] == "error":
            entry["label"], entry["prediction"] = (int(v) for v in key.split("-"))
        s = part["summary"]
        entry["methods"][part["method"]] = {"metrics": s["metrics"], "histograms": s["histograms"],
                                            "mean_map": part["mean_map"],
                                            "mean_map_values": part["mean_map_values"]}  # fmt: skip
    methods = {}
    for method in sorted({p["method"] for p in parts}):
        mine = [p for p in parts if p["method"] == method and p["group"] == "class"]
        methods[method] = {
            "localisation": _weighted(mine, LOCALISATION),
            "faithfulness": _faithfulness(mine, baseline),
            "sanity": (sanity or {}).get(method),
        }
    return {
        "methods": methods,
        "classes": tables["class"],
        "labels": tables["label"],
        "errors": tables["error"],
        "slices": tables["slice"],
        "records": records,
        "map_size": map_size,
    }
