"""audit.json (+ its PNG maps, the run's manifest, summary and rows) -> audit/report.html: one
page a person opens from the file system. No Beam, no TensorFlow, no network: the plots are
inline SVG, the table sorts with a few lines of inline JavaScript, images are relative links
to the PNGs next to it (audit/maps/...) and to the run's artifacts (../artifacts/...).

This module builds the page's view model (plain dicts of what each section shows, chart
coordinates included); the HTML is templates/report.html.j2 and macros.html.j2, rendered by
Jinja2 with autoescaping on, so a key, class name or error message is always text, never
markup. Sections: the run (provenance, settings, failures), what changed since the previous
audit, the methods (localisation, faithfulness curves, the sanity check with its caveat),
the classes (a sortable table; per class, collapsed: mean maps, clusters, flags with their
evidence and example thumbnails, metric histograms), errors by (label, prediction), best and
worst localisation examples. A page-level check marks the body ``data-images-ok`` once every
image has loaded (or lists the ones that did not), which the browser test reads.
"""

from __future__ import annotations

import functools
import json

import jinja2

EXAMPLES = 8  # thumbnails per flagged cluster and per best / worst list
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
_HISTOGRAMS = ("pointing", "energy_in_box", "gini", "border_mass")


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.audit.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a view-model key the template misses fails
        trim_blocks=True,
        lstrip_blocks=True,
    )


def line_chart(
    series: dict[str, list[float]],
    *,
    title: str,
    x_ends: tuple[str, str] = ("0", "1"),
    width: int = 320,
    height: int = 180,
) -> dict | None:
    """One polyline per series over evenly spaced x (labelled ``x_ends``), with axes and a
    legend: the coordinates the template draws (None when there is nothing to draw)."""
    values = [v for s in series.values() for v in s if v is not None]
    if not values:
        return None
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1.0
    left, top, w, h = 40, 20, width - 50, height - 45
    drawn = []
    for i, (name, ys) in enumerate(series.items()):
        n = max(1, len(ys) - 1)
        points = " ".join(
            f"{left + w * k / n:.1f},{top + h * (1 - (y - lo) / (hi - lo)):.1f}"
            for k, y in enumerate(ys)
        )
        drawn.append({"name": name, "colour": _COLOURS[i % len(_COLOURS)], "points": points})
    return {"title": title, "width": width, "height": height, "left": left, "top": top,
            "w": w, "h": h, "hi_label": f"{hi:.3g}", "lo_label": f"{lo:.3g}",
            "x_ends": x_ends, "series": drawn}  # fmt: skip


def histogram(counts: list[int], *, title: str, width: int = 180, height: int = 70) -> dict | None:
    """Bars of a [0, 1] histogram (None when empty)."""
    if not counts or not sum(counts):
        return None
    peak = max(counts)
    bar = (width - 10) / len(counts)
    bars = [
        {"x": f"{5 + i * bar:.1f}", "y": f"{height - 15 - (height - 30) * c / peak:.1f}",
         "width": f"{bar - 1:.1f}", "height": f"{(height - 30) * c / peak:.1f}"}
        for i, c in enumerate(counts)
    ]  # fmt: skip
    return {"title": title, "width": width, "height": height, "bars": bars}


def _in_audit_dir(path: str) -> str:
    """audit.json's paths are relative to the output dir; the report sits in audit/."""
    return path[len("audit/") :] if path.startswith("audit/") else f"../{path}"


def _figure(src: str, caption: str) -> dict:
    return {"src": src, "caption": caption}


def _thumbs(
    keys: list[str],
    method: str,
    manifest: dict[str, dict],
    label=None,
    windows=None,
    window_side: float = 0.0,
) -> list[dict]:
    """Thumbnails of ``keys``' overlays; with ``windows`` (key -> a hotspot window's centre,
    in fractions of the side) each shows its window as a box (top, left, side in %)."""
    out = []
    side = 100 * window_side
    for key in keys[:EXAMPLES]:
        artifacts = manifest.get(key, {}).get("artifacts", {}).get(method, {})
        view = artifacts.get("overlay") or artifacts.get("heatmap")
        caption = key if label is None or not view else f"{key} {label(key)}"
        thumb = {"src": f"../{view}" if view else "", "caption": caption}
        if windows and key in windows:
            y, x = windows[key]
            thumb["window"] = [round(100 * y - side / 2, 2), round(100 * x - side / 2, 2), side]
        out.append(thumb)
    return out


def _run(summary: dict, settings: dict, failures: list[dict], fingerprint: str) -> dict:
    facts = [
        ("records", summary.get("records_total", summary.get("records"))),
        ("inputs", summary.get("inputs")),
        ("failed", summary.get("images_failed")),
        ("model", summary.get("model")),
        ("model fingerprint", fingerprint),
        ("methods", ", ".join(summary.get("methods", []))),
        ("run id", summary.get("run_id")),
        ("incremental", summary.get("incremental")),
    ]
    shown = [{"key": f.get("key"), "stage": f.get("stage"), "error": str(f.get("error"))[:160]}
             for f in failures[:50]]  # fmt: skip
    return {"facts": facts, "failures": shown, "failed": len(failures),
            "settings": json.dumps(settings, indent=2, sort_keys=True)}  # fmt: skip


def _methods(audit: dict) -> dict:
    rows, curves, sanity, skips = [], [], [], []
    for method, m in audit["methods"].items():
        loc, faith, san = m["localisation"], m.get("faithfulness") or {}, m.get("sanity")
        cells = [loc.get(k) for k in ("pointing", "energy_in_box", "rank_accuracy", "box_iou",
                                      "box_correct", "n")]  # fmt: skip
        cells += [faith.get("deletion_auc"), faith.get("insertion_auc"), faith.get("n")]
        skipped = san is not None and "skipped" in san
        cells.append(None if san is None or skipped else san["depends_on_weights"])
        rows.append({"name": method, "cells": cells})
        if faith.get("deletion_curve"):
            curves.append(line_chart(
                {"deletion": faith["deletion_curve"], "insertion": faith["insertion_curve"]},
                title=f"{method}: mean target logit", x_ends=("0", "1 (fraction of pixels)"),
            ))  # fmt: skip
        if skipped:
            skips.append(f"{method}: {san['skipped']}")
        elif san:
            series = san.get("statistics") or {"spearman_abs": san["correlations"]}
            sanity.append(line_chart(
                {name: [1.0, *values] for name, values in series.items()},
                title=f"{method}: similarity vs layers randomised",
                x_ends=("0", str(len(san["correlations"]))),
            ))  # fmt: skip
    caveat = next((m["sanity"]["caveat"] for m in audit["methods"].values()
                   if m.get("sanity") and "caveat" in m["sanity"]), None)  # fmt: skip
    return {"rows": rows, "curves": curves, "sanity": sanity, "caveat": caveat,
            "sanity_skipped": skips}  # fmt: skip


# evidence beyond value / threshold that the report prints (audit.record.hotspots)
_DETAIL = (
    "control",
    "contrast_threshold",
    "movement",
    "hotspot_share",
    "enrichment",
    "enrichment_threshold",
    "class_rate",
    "other_classes_rate",
    "border_mass",
    "outside_share",
    "others_median",
    "ratio",
)


def _flag(flag: dict, clusters: list[dict], manifest: dict[str, dict]) -> dict:
    ev = flag["evidence"]
    same = [c for c in clusters if (c["method"], c["cluster"]) == (flag["method"], flag["cluster"])]
    proto = same[0]["prototype"] if same else None
    return {"kind": flag["kind"], "method": flag["method"], "cluster": flag["cluster"],
            "members": len(flag["members"]), "measured": ev["measured"], "value": ev["value"],
            "threshold": ev["threshold"], "prototype": _in_audit_dir(proto) if proto else "",
            "thumbs": _thumbs(flag["members"], flag["method"], manifest,
                              windows=ev.get("windows"), window_side=ev.get("window_side", 0)),
            "detail": [(k.replace("_", " "), ev[k]) for k in _DETAIL
                       if ev.get(k) is not None],
            "confirmation": _confirmation(flag.get("confirmation"))}  # fmt: skip


_CAPTIONS = {"member_before": "member", "member_after": "region occluded",
             "recipient_before": "other class", "recipient_after": "region pasted in"}  # fmt: skip


def _interval(part: dict | None) -> str:
    if not part or part.get("effect") is None:
        return "not measured"
    return f"{part['effect']:+.3g} [{part['low']:+.3g}, {part['high']:+.3g}] (n={part['n']})"


def _object_lines(c: dict) -> list[tuple[str, str]]:
    """What the object-aware test adds: how much of the region the object covered, and the
    test of the whole region (object included) beside the test without it."""
    if c.get("object_cover") is None:
        return [("objects", "no boxes or masks: the test cannot tell the object from a shortcut")]
    whole = c.get("whole_region", {})
    return [
        ("share of the region the object covered", f"{c['object_cover']:.2f}"),
        ("tested", "the region minus the object (and its control likewise)"),
        ("whole region, object included: logit drop", _interval(whole.get("logit_drop"))),
        ("whole region changes the decision", "yes" if whole.get("changes_decision") else "no"),
    ]


def _confirmation(c: dict | None) -> dict | None:
    """The report's view of a flag's causal confirmation (audit.causal.interventions)."""
    if not c:
        return None
    return {
        "verdict": c.get("verdict", ""),
        "confirmed": bool(c.get("confirmed")),
        "lines": [
            ("target logit drop, region minus control", _interval(c.get("logit_drop"))),
            ("prediction flips on occlusion, minus control", _interval(c.get("occlusion_flip"))),
            ("recipients flipped to the class, minus control", _interval(c.get("transplant_flip"))),
        ]
        + _object_lines(c),  # fmt: skip
        "images": [
            _figure(_in_audit_dir(c["images"][view]), caption)
            for view, caption in _CAPTIONS.items()
            if view in c.get("images", {})
        ],
    }


def _classes(audit: dict, manifest: dict[str, dict]) -> dict:
    names = {str(m[f"{kind}_class"]): m[f"{kind}_name"] for m in manifest.values()
             for kind in ("prediction", "target") if m.get(f"{kind}_name")}  # fmt: skip
    methods = list(audit["methods"])
    head = ["class", "count", "accuracy", "confidence", "flags"]
    head += [f"{m} pointing" for m in methods] + [f"{m} deletion AUC" for m in methods]
    rows = []
    for cid, entry in audit["classes"].items():
        per = entry["methods"]
        cells = [entry["count"], entry["accuracy"], entry["mean_confidence"], len(entry["flags"])]
        cells += [per.get(m, {}).get("metrics", {}).get("pointing") for m in methods]
        cells += [per.get(m, {}).get("metrics", {}).get("deletion_auc") for m in methods]
        rows.append({
            "id": cid,
            "label": f"{cid} {names[cid]}" if cid in names else cid,
            "count": entry["count"],
            "cells": cells,
            "maps": [_figure(_in_audit_dir(per[m]["mean_map"]), f"{m} mean") for m in per],
            "flags": [_flag(f, entry["clusters"], manifest) for f in entry["flags"]],
            "clusters": [_figure(_in_audit_dir(c["prototype"]),
                                 f"{c['method']} #{c['cluster']} ({c['size']})")
                         for c in entry["clusters"]],
            "histograms": [histogram(h, title=f"{m} {name}") for m in per
                           for name, h in sorted(per[m]["histograms"].items())
                           if name in _HISTOGRAMS],
        })  # fmt: skip
    return {"head": head, "rows": rows}


def _slices(audit: dict, manifest: dict[str, dict]) -> dict:
    """The slice table: per slice its numbers, mean maps and flags (audit.slices)."""
    methods = list(audit["methods"])
    head = ["slice", "count", "accuracy", "confidence", "flags"]
    head += [f"{m} {name}" for m in methods for name in ("pointing", "gini", "deletion AUC")]
    rows = []
    for sid, entry in (audit.get("slices") or {}).items():
        per = entry["methods"]
        cells = [entry["count"], entry["accuracy"], entry["mean_confidence"], len(entry["flags"])]
        cells += [per.get(m, {}).get("metrics", {}).get(name) for m in methods
                  for name in ("pointing", "gini", "deletion_auc")]  # fmt: skip
        rows.append({
            "id": sid, "cells": cells,
            "maps": [_figure(_in_audit_dir(per[m]["mean_map"]), f"{m} mean") for m in per],
            "flags": [_flag(f, entry["clusters"], manifest) for f in entry["flags"]],
        })  # fmt: skip
    return {"head": head, "rows": rows}


def _errors(audit: dict) -> list[dict]:
    return [
        {"label": e["label"], "prediction": e["prediction"], "count": e["count"],
         "maps": [_figure(_in_audit_dir(m["mean_map"]), name) for name, m in e["methods"].items()]}
        for e in sorted((audit.get("errors") or {}).values(), key=lambda e: -e["count"])
    ]  # fmt: skip


def _examples(rows: list[dict], manifest: dict[str, dict]) -> list[dict]:
    scored = [r for r in rows if r.get("energy_in_box") is not None]
    out = []
    for method in sorted({r["method"] for r in scored}):
        mine = sorted((r for r in scored if r["method"] == method),
                      key=lambda r: (r["energy_in_box"], r["key"]))  # fmt: skip
        energy = {r["key"]: r["energy_in_box"] for r in mine}

        def label(key: str, energy: dict = energy) -> str:
            return f"{energy[key]:.2f}"

        out.append({
            "method": method,
            "best": _thumbs([r["key"] for r in reversed(mine)], method, manifest, label),
            "worst": _thumbs([r["key"] for r in mine], method, manifest, label),
        })  # fmt: skip
    return out


def _drift(drift: dict | None) -> dict | None:
    if drift is None:
        return None
    metrics = [
        {"name": f"{method} {name}", "before": c["before"], "after": c["after"],
         "change": c["change"]}
        for method, numbers in drift["methods"].items()
        for name, c in numbers.items()
        if c["change"] is not None
    ]  # fmt: skip
    classes = []
    for c in drift["classes"][:20]:
        for method, m in c["methods"].items():
            sizes = m.get("clusters", {})
            classes.append({
                "class": c["class"], "method": method, "similarity": m["similarity"],
                "change": m["change_score"],
                "clusters": f"{sizes.get('before', [])} -> {sizes.get('after', [])}",
                "new": ", ".join(m["flags_appeared"]) or "-",
                "gone": ", ".join(m["flags_gone"]) or "-",
            })  # fmt: skip
    return {
        "previous": drift.get("previous", "?"),
        "records": (drift["records"]["before"], drift["records"]["after"]),
        "flags": (drift["flags"]["before"], drift["flags"]["after"]),
        "broken": list(drift.get("broken", [])),
        "metrics": metrics,
        "classes": classes,
    }


def render_report(
    audit: dict,
    *,
    summary: dict | None = None,
    manifest: list[dict] | None = None,
    rows: list[dict] | None = None,
    failures: list[dict] | None = None,
    settings: dict | None = None,
    drift: dict | None = None,
) -> str:
    """The whole report.html as a string (``drift``: drift.compare against the previous
    audit, shown as "What changed")."""
    by_key = {m["key"]: m for m in manifest or []}
    fingerprint = next((m.get("model_fingerprint") for m in manifest or []), "")
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=f"Saliency audit: {audit['records']} records, {len(audit['classes'])} classes",
            flags=sum(len(c["flags"]) for c in audit["classes"].values()),
            run=_run(summary or {}, settings or {}, failures or [], fingerprint),
            drift=_drift(drift),
            methods=_methods(audit),
            classes=_classes(audit, by_key),
            slices=_slices(audit, by_key),
            errors=_errors(audit),
            examples=_examples(rows or [], by_key),
        )
    )
