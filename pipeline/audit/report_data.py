"""From per-class aggregates to the audit's public contract (audit.json), no Beam:
strategies and flags per (class, method), localisation per method, the PNG maps.

audit.json::

    {"methods": {m: {"localisation": {"pointing", "energy_in_box", "rank_accuracy", "n"},
                     "faithfulness": null, "sanity": null}},
     "classes": {"<class id>": {"count", "accuracy", "mean_confidence",
                                "flags": [{"kind", "method", "cluster", "members",
                                           "evidence"}],
                                "clusters": [{"method", "cluster", "size", "members",
                                              "prototype"}],
                                "methods": {m: {"metrics", "histograms", "mean_map"}}}},
     "records": n, "map_size": s}

Faithfulness and the sanity check need the model, so they are null here until the audit
runs inside the job's model handler (see the issue's next steps).
"""

import numpy as np

from pipeline.audit.aggregates import ClassAggregate
from pipeline.audit.flags import class_flags
from pipeline.audit.strategies import discover
from pipeline.maps.render import heatmap_png
from pipeline.store.layout import audit_map_path

LOCALISATION = ("pointing", "energy_in_box", "rank_accuracy")
_PNG_SIZE = 128  # prototypes and mean maps are drawn at least this large


def _png(m: np.ndarray) -> bytes:
    peak = float(m.max())
    scaled = m / peak if peak > 0 else m
    return heatmap_png(scaled.astype(np.float32), scale=max(1, _PNG_SIZE // m.shape[0]))


def class_method_report(
    method: str, class_id: int, aggregate: ClassAggregate, *, neighbours: int, max_clusters: int
) -> tuple[dict, dict[str, bytes]]:
    """(the class-and-method part of audit.json, {relative path: PNG bytes})."""
    files = {audit_map_path(method, class_id): _png(aggregate.mean_map())}
    summary = aggregate.summary()
    part = {
        "method": method,
        "class": class_id,
        "summary": summary,
        "mean_map": audit_map_path(method, class_id),
        "clusters": [],
        "flags": [],
    }
    keys, maps = aggregate.sample()
    if len(keys) >= 3:
        found = discover(maps, neighbours=neighbours, max_clusters=max_clusters)
        for cluster, prototype in enumerate(found.prototypes):
            path = audit_map_path(method, class_id, cluster)
            files[path] = _png(prototype)
            members = [k for k, label in zip(keys, found.labels) if label == cluster]
            part["clusters"].append({"method": method, "cluster": cluster,
                                     "size": len(members), "members": members,
                                     "prototype": path})  # fmt: skip
        part["flags"] = class_flags(method, found, keys, aggregate.mean_map())
    return part, files


def assemble(parts: list[dict], records: int, map_size: int) -> dict:
    """audit.json from every (class, method) part."""
    classes: dict[str, dict] = {}
    methods: dict[str, dict] = {}
    for part in sorted(parts, key=lambda p: (p["class"], p["method"])):
        entry = classes.setdefault(str(part["class"]), {"flags": [], "clusters": [],
                                                        "methods": {}})  # fmt: skip
        s = part["summary"]
        entry.update(count=s["count"], accuracy=s["accuracy"],
                     mean_confidence=s["mean_confidence"])  # fmt: skip
        entry["methods"][part["method"]] = {"metrics": s["metrics"], "histograms": s["histograms"],
                                            "mean_map": part["mean_map"]}  # fmt: skip
        entry["flags"] += part["flags"]
        entry["clusters"] += part["clusters"]
        loc = methods.setdefault(part["method"], {"sums": dict.fromkeys(LOCALISATION, 0.0),
                                                  "n": 0})  # fmt: skip
        n = s["n"].get("pointing", 0)
        if n:
            for name in LOCALISATION:
                loc["sums"][name] += s["metrics"][name] * n
            loc["n"] += n
    out_methods = {}
    for method, loc in sorted(methods.items()):
        n = loc["n"]
        localisation = {name: (loc["sums"][name] / n if n else None) for name in LOCALISATION}
        out_methods[method] = {"localisation": {**localisation, "n": n},
                               "faithfulness": None, "sanity": None}  # fmt: skip
    return {"methods": out_methods, "classes": classes, "records": records, "map_size": map_size}
