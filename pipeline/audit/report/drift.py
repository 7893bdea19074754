"""What changed between two audits (two audit.json dicts), and gating rules over it. No Beam,
no TensorFlow: it reads audit.json only.

Per method: every localisation and faithfulness number, before / after / change. Per class
and method present in both: the cosine similarity of the two mean maps (1: the same place),
every metric mean's change, the cluster sizes before and after (strategies that appeared or
went away), and the flags that appeared or went away (by kind, since cluster numbers are not
stable between audits). Classes are ranked by change: 1 - similarity, plus
the flags that appeared or went away, plus the largest absolute metric change of a bounded
metric (fractions in [0, 1]). It works for two models on the same images and for two dates
with different images alike: only aggregates are compared.

Rules (TFMA's change thresholds): ``METRIC[@METHOD][[SLICE]]:CHANGE`` where CHANGE is a
signed number,
absolute (``pointing:-0.05``: fail when pointing falls by more than 0.05) or relative with a
``%`` (``energy_in_box:-10%``: fail when it falls by more than 10 %). A negative change guards
a drop, a positive one a rise (``deletion_auc:+0.5``: lower is better there). METRIC is a
method-level number (``pointing``, ``energy_in_box``, ``rank_accuracy``, ``box_iou``,
``box_correct``, ``deletion_auc``, ``insertion_auc``) or ``flags`` (the total number of
flags; ``flags:+0`` fails on any new flag) or ``similarity`` (the lowest mean-map
similarity of any class, absolute change from 1: ``similarity:-0.2``). A metric of one
slice (audit.slices) is ``METRIC[@METHOD][SLICE]``: ``pointing@guided[site=B]:-0.05`` gates
the mean pointing of that slice's records, and fails when the slice is not in both audits.
"""

import dataclasses
import math
import re

from pipeline.choices import DRIFT_RULE
from pipeline.config.audit import slice_spec, slice_text

LOCALISATION = ("pointing", "energy_in_box", "rank_accuracy", "box_iou", "box_correct")
FAITHFULNESS = ("deletion_auc", "insertion_auc")
METHOD_METRICS = LOCALISATION + FAITHFULNESS
RULE_METRICS = (*METHOD_METRICS, "flags", "similarity")
_RULE = re.compile(DRIFT_RULE)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One gate: fail when ``metric`` (of ``method``, or of every method) changes by more
    than ``change`` in its direction (relative when ``relative``)."""

    metric: str
    change: float
    relative: bool = False
    method: str | None = None
    slice: str | None = None  # a slice id of audit.json's "slices" (normal form)

    @property
    def text(self) -> str:
        at = (f"@{self.method}" if self.method else "") + (f"[{self.slice}]" if self.slice else "")
        return f"{self.metric}{at}:{self.change:+g}{'%' if self.relative else ''}"


def parse_rule(text: str) -> Rule:
    """``pointing:-0.05``, ``energy_in_box@guided:-10%``, ``flags:+0`` -> Rule; a bad rule
    raises ValueError naming it and the form."""
    match = _RULE.match(text.strip())
    if not match or match["metric"] not in RULE_METRICS:
        raise ValueError(
            f"--fail-on {text!r}: a rule is METRIC[@METHOD][[SLICE]]:CHANGE with a signed CHANGE, "
            f"absolute or with %, e.g. pointing:-0.05 or energy_in_box:-10%; METRIC is one "
            f"of {list(RULE_METRICS)}."
        )
    if match["metric"] in ("flags", "similarity") and match["pct"]:
        raise ValueError(f"--fail-on {text!r}: {match['metric']} takes an absolute change.")
    where = None
    if match["slice"]:
        if match["metric"] not in METHOD_METRICS:
            raise ValueError(f"--fail-on {text!r}: a slice takes one of {list(METHOD_METRICS)}.")
        try:  # the id as audit.json writes it: every column with its value
            spec = slice_spec(match["slice"])
        except ValueError as exc:
            raise ValueError(f"--fail-on {text!r}: {exc}.") from exc
        if any(value is None for _, value in spec):
            raise ValueError(f"--fail-on {text!r}: name the slice with values, e.g. [site=B].")
        where = slice_text(spec)
    return Rule(match["metric"], float(match["change"]), bool(match["pct"]), match["method"],
                where)  # fmt: skip


def _change(before, after) -> dict:
    out = {"before": before, "after": after, "change": None, "relative": None}
    if isinstance(before, (int, float)) and isinstance(after, (int, float)):
        out["change"] = after - before
        out["relative"] = (after - before) / abs(before) if before else None
    return out


def similarity(a, b) -> float | None:
    """Cosine similarity of two mean maps (lists of rows), None when either is missing or
    their sizes differ."""
    if not a or not b or len(a) != len(b) or len(a[0]) != len(b[0]):
        return None
    x = [v for row in a for v in row]
    y = [v for row in b for v in row]
    nx, ny = math.sqrt(sum(v * v for v in x)), math.sqrt(sum(v * v for v in y))
    return sum(p * q for p, q in zip(x, y)) / (nx * ny) if nx and ny else None


def _clusters(entry: dict, method: str) -> list[int]:
    """The sizes of a class's clusters for one method, largest first."""
    return sorted((c["size"] for c in entry.get("clusters", []) if c["method"] == method),
                  reverse=True)  # fmt: skip


def _kinds(entry: dict, method: str) -> set[str]:
    return {f["kind"] for f in entry.get("flags", []) if f["method"] == method}


def _class_changes(cid: str, a: dict, b: dict) -> dict:
    methods = {}
    score = 0.0
    for method in sorted(set(a.get("methods", {})) & set(b.get("methods", {}))):
        ma, mb = a["methods"][method], b["methods"][method]
        sim = similarity(ma.get("mean_map_values"), mb.get("mean_map_values"))
        metrics = {
            name: _change(ma["metrics"].get(name), mb["metrics"].get(name))
            for name in sorted(set(ma["metrics"]) | set(mb["metrics"]))
        }
        appeared = sorted(_kinds(b, method) - _kinds(a, method))
        gone = sorted(_kinds(a, method) - _kinds(b, method))
        bounded = [abs(c["change"]) for n, c in metrics.items()
                   if c["change"] is not None and n not in FAITHFULNESS]  # fmt: skip
        part = (1.0 - sim if sim is not None else 0.0) + len(appeared) + len(gone)
        part += max(bounded, default=0.0)
        score = max(score, part)
        clusters = {"before": _clusters(a, method), "after": _clusters(b, method)}
        methods[method] = {"similarity": sim, "metrics": metrics, "flags_appeared": appeared,
                           "flags_gone": gone, "clusters": clusters,
                           "change_score": part}  # fmt: skip
    return {"class": cid, "count": _change(a.get("count"), b.get("count")),
            "accuracy": _change(a.get("accuracy"), b.get("accuracy")), "methods": methods,
            "change_score": score}  # fmt: skip


def compare(a: dict, b: dict) -> dict:
    """What changed from audit ``a`` (before) to audit ``b`` (after)."""
    methods = {}
    for method in sorted(set(a["methods"]) & set(b["methods"])):
        ma, mb = a["methods"][method], b["methods"][method]
        numbers = {}
        for section, names in (("localisation", LOCALISATION), ("faithfulness", FAITHFULNESS)):
            sa, sb = ma.get(section) or {}, mb.get(section) or {}
            for name in names:
                numbers[name] = _change(sa.get(name), sb.get(name))
        methods[method] = numbers
    common = sorted(set(a["classes"]) & set(b["classes"]), key=_class_order)
    classes = [_class_changes(c, a["classes"][c], b["classes"][c]) for c in common]
    classes.sort(key=lambda c: (-c["change_score"], _class_order(c["class"])))
    flags = [sum(len(e.get("flags", [])) for e in x["classes"].values()) for x in (a, b)]
    sims = [m["similarity"] for c in classes for m in c["methods"].values()
            if m["similarity"] is not None]  # fmt: skip
    return {
        "records": _change(a.get("records"), b.get("records")),
        "methods": methods,
        "flags": _change(*flags),
        "lowest_similarity": min(sims, default=None),
        "classes": classes,
        "classes_appeared": sorted(set(b["classes"]) - set(a["classes"]), key=_class_order),
        "classes_gone": sorted(set(a["classes"]) - set(b["classes"]), key=_class_order),
        "slices": _slice_changes(a.get("slices", {}), b.get("slices", {})),
    }


def _slice_changes(a: dict, b: dict) -> dict:
    """slice id -> method -> metric -> change, for the slices in both audits."""
    out = {}
    for sid in sorted(set(a) & set(b)):
        ma, mb = a[sid]["methods"], b[sid]["methods"]
        out[sid] = {m: {name: _change(ma[m]["metrics"].get(name), mb[m]["metrics"].get(name))
                        for name in METHOD_METRICS}
                    for m in sorted(set(ma) & set(mb))}  # fmt: skip
    return out


def _class_order(cid: str) -> tuple:
    return (0, int(cid), "") if cid.lstrip("-").isdigit() else (1, 0, cid)


def _broken(rule: Rule, change: dict) -> bool:
    value = change["relative"] * 100.0 if rule.relative else change["change"]
    if value is None:
        return False
    return value < rule.change if rule.change < 0 else value > rule.change


def check_rules(drift: dict, rules: list[Rule]) -> list[str]:
    """One line per broken rule: what broke, before, after, the change and the threshold."""
    broken = []
    for rule in rules:
        if rule.metric == "flags":
            changes = {"all classes": drift["flags"]}
        elif rule.metric == "similarity":
            low = drift["lowest_similarity"]
            changes = {"lowest class": _change(1.0, low)} if low is not None else {}
        elif rule.slice:
            methods = drift.get("slices", {}).get(rule.slice)
            if methods is None:
                broken.append(f"{rule.text}: slice {rule.slice!r} is not in both audits "
                              f"(they have {sorted(drift.get('slices', {}))})")  # fmt: skip
                continue
            changes = {f"{m}[{rule.slice}]": numbers[rule.metric]
                       for m, numbers in methods.items() if rule.method in (None, m)}  # fmt: skip
        else:
            changes = {m: numbers[rule.metric] for m, numbers in drift["methods"].items()
                       if rule.method in (None, m)}  # fmt: skip
            if rule.method and rule.method not in drift["methods"]:
                broken.append(f"{rule.text}: method {rule.method!r} is not in both audits "
                              f"(they have {sorted(drift['methods'])})")  # fmt: skip
        for where, change in changes.items():
            if _broken(rule, change):
                shown = (f"{change['relative']:+.1%}" if rule.relative
                         else f"{change['change']:+.4g}")  # fmt: skip
                broken.append(
                    f"{rule.text}: {rule.metric} of {where} went from {change['before']:.4g} "
                    f"to {change['after']:.4g} ({shown})"
                )
    return broken


def summary_lines(drift: dict, top: int = 10) -> list[str]:
    """A short text report: records, flags, methods, the classes that changed most."""
    lines = [f"records {drift['records']['before']} -> {drift['records']['after']}, "
             f"flags {drift['flags']['before']} -> {drift['flags']['after']}"]  # fmt: skip
    for method, numbers in drift["methods"].items():
        parts = [f"{n} {c['before']:.3f} -> {c['after']:.3f}" for n, c in numbers.items()
                 if c["change"] is not None]  # fmt: skip
        lines.append(f"{method}: " + (", ".join(parts) if parts else "no comparable numbers"))
    lines.append("classes by change:")
    for c in drift["classes"][:top]:
        sims = ", ".join(f"{m} {v['similarity']:.2f}" for m, v in c["methods"].items()
                         if v["similarity"] is not None)  # fmt: skip
        new = sorted({k for v in c["methods"].values() for k in v["flags_appeared"]})
        gone = sorted({k for v in c["methods"].values() for k in v["flags_gone"]})
        extra = (f"; flags new {new}" if new else "") + (f"; flags gone {gone}" if gone else "")
        lines.append(f"  class {c['class']}: change {c['change_score']:.3f}; map similarity "
                     f"{sims or 'n/a'}{extra}")  # fmt: skip
    return lines
