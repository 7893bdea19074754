"""audit.json (+ its PNG maps, the run's manifest, summary and rows) -> audit/report.html: one
page a person opens from the file system. No Beam, no TensorFlow, no network: the plots are
inline SVG, the table sorts with a few lines of inline JavaScript, images are relative links
to the PNGs next to it (audit/maps/...) and to the run's artifacts (../artifacts/...).

Sections: the run (provenance, settings, failures), the methods (localisation,
faithfulness with its mean deletion / insertion curves, the sanity check with its caveat),
the classes (a sortable table; per class, collapsed: mean maps, clusters, flags with their
evidence and example thumbnails, metric histograms), errors by (label, prediction), best and
worst localisation examples. A page-level check marks the body ``data-images-ok`` once every
image has loaded (or lists the ones that did not), which the browser test reads.
"""

import html
import json

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 8px;
text-align:right}th{background:#f4f4f4;cursor:pointer}td:first-child,th:first-child{text-align:left}
.flag{color:#b00020;font-weight:600}.muted{color:#777}.grid{display:flex;flex-wrap:wrap;gap:8px}
.grid figure{margin:0;text-align:center;font-size:11px}.grid img{width:96px;height:96px;
image-rendering:pixelated;border:1px solid #ccc}details{margin:6px 0}summary{cursor:pointer}
.caveat{background:#fff8e1;padding:8px;border-left:4px solid #f0b400}
#broken{color:#b00020}
"""

_SCRIPT = """
function sortTable(th){const t=th.closest('table'),i=[...th.parentNode.children].indexOf(th);
const rows=[...t.tBodies[0].rows],asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
rows.sort((a,b)=>{const x=a.cells[i].dataset.v??a.cells[i].textContent,
y=b.cells[i].dataset.v??b.cells[i].textContent,nx=parseFloat(x),ny=parseFloat(y);
const c=(isNaN(nx)||isNaN(ny))?x.localeCompare(y):nx-ny;return asc?c:-c});
rows.forEach(r=>t.tBodies[0].appendChild(r));}
window.addEventListener('load',()=>{const bad=[...document.images].filter(
i=>!(i.complete&&i.naturalWidth>0)).map(i=>i.getAttribute('src'));
document.body.dataset.imagesOk=bad.length?'false':'true';
if(bad.length){const p=document.getElementById('broken');
p.textContent=bad.length+' image(s) did not load: '+bad.slice(0,5).join(', ');}});
"""

EXAMPLES = 8  # thumbnails per flagged cluster and per best / worst list


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _num(value, digits: int = 3) -> str:
    if value is None:
        return '<span class="muted">n/a</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _cell(value, digits: int = 3) -> str:
    sort = "" if not isinstance(value, (int, float)) or value is None else f' data-v="{value}"'
    return f"<td{sort}>{_num(value, digits)}</td>"


def line_chart(
    series: dict[str, list[float]],
    *,
    title: str,
    x_ends: tuple[str, str] = ("0", "1"),
    width=320,
    height=180,
) -> str:
    """Inline SVG: one polyline per series over evenly spaced x (labelled ``x_ends``), with
    axes and a legend."""
    values = [v for s in series.values() for v in s if v is not None]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1.0
    left, top, w, h = 40, 20, width - 50, height - 45
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    parts = [
        f'<svg width="{width}" height="{height}" role="img" aria-label="{_e(title)}">',
        f'<text x="{left}" y="14" font-size="12">{_e(title)}</text>',
        f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" stroke="#999"/>',
        f'<text x="2" y="{top + 8}" font-size="10">{hi:.3g}</text>',
        f'<text x="2" y="{top + h}" font-size="10">{lo:.3g}</text>',
        f'<text x="{left}" y="{height - 4}" font-size="10">{_e(x_ends[0])}</text>',
        f'<text x="{left + w}" y="{height - 4}" font-size="10" text-anchor="end">'
        f"{_e(x_ends[1])}</text>",
    ]
    for i, (name, ys) in enumerate(series.items()):
        n = max(1, len(ys) - 1)
        points = " ".join(
            f"{left + w * k / n:.1f},{top + h * (1 - (y - lo) / (hi - lo)):.1f}"
            for k, y in enumerate(ys)
        )
        colour = colours[i % len(colours)]
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
        )
        parts.append(
            f'<text x="{left + w - 90}" y="{top + 12 + 13 * i}" font-size="11" '
            f'fill="{colour}">{_e(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram(counts: list[int], *, title: str, width=180, height=70) -> str:
    """Inline SVG bars of a [0, 1] histogram."""
    if not counts or not sum(counts):
        return ""
    peak = max(counts)
    bar = (width - 10) / len(counts)
    bars = "".join(
        f'<rect x="{5 + i * bar:.1f}" y="{height - 15 - (height - 30) * c / peak:.1f}" '
        f'width="{bar - 1:.1f}" height="{(height - 30) * c / peak:.1f}" fill="#5b8def"/>'
        for i, c in enumerate(counts)
    )
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="{_e(title)}">'
        f'<text x="5" y="11" font-size="11">{_e(title)}</text>{bars}'
        f'<text x="5" y="{height - 2}" font-size="9">0</text>'
        f'<text x="{width - 12}" y="{height - 2}" font-size="9">1</text></svg>'
    )


def _img(src: str, caption: str) -> str:
    return (
        f'<figure><img src="{_e(src)}" alt="{_e(caption)}" loading="eager">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _in_audit_dir(path: str) -> str:
    """audit.json's paths are relative to the output dir; the report sits in audit/."""
    return path[len("audit/") :] if path.startswith("audit/") else f"../{path}"


def _thumbs(keys: list[str], method: str, manifest: dict[str, dict], label=None) -> str:
    figures = []
    for key in keys[:EXAMPLES]:
        artifacts = manifest.get(key, {}).get("artifacts", {}).get(method, {})
        view = artifacts.get("overlay") or artifacts.get("heatmap")
        if view:
            figures.append(_img(f"../{view}", key if label is None else f"{key} {label(key)}"))
        else:
            figures.append(f"<figure class='muted'>{_e(key)}<br>(no artifact)</figure>")
    return f'<div class="grid">{"".join(figures)}</div>'


def _run_section(summary: dict, settings: dict, failures: list[dict], fingerprint: str) -> str:
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
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_num(v)}</td></tr>" for k, v in facts)
    fails = "".join(
        f"<tr><td>{_e(f.get('key'))}</td><td>{_e(f.get('stage'))}</td>"
        f"<td>{_e(str(f.get('error'))[:160])}</td></tr>"
        for f in failures[:50]
    )
    fail_table = (
        f"<details><summary>{len(failures)} failed input(s)</summary><table>"
        f"<tr><th>key</th><th>stage</th><th>error</th></tr>{fails}</table></details>"
        if failures
        else "<p>No failed inputs.</p>"
    )
    config = _e(json.dumps(settings, indent=2, sort_keys=True))
    return (
        f"<h2>The run</h2><table>{rows}</table>{fail_table}"
        f"<details><summary>settings</summary><pre>{config}</pre></details>"
    )


def _methods_section(audit: dict) -> str:
    head = (
        "<tr><th>method</th><th>pointing</th><th>energy in box</th><th>rank accuracy</th>"
        "<th>weak-box IoU</th><th>box correct</th><th>n</th><th>deletion AUC</th>"
        "<th>insertion AUC</th><th>n</th><th>depends on weights</th></tr>"
    )
    rows, charts, sanity = [], [], []
    for method, m in audit["methods"].items():
        loc, faith, san = m["localisation"], m.get("faithfulness") or {}, m.get("sanity")
        cells = [
            loc.get(k)
            for k in ("pointing", "energy_in_box", "rank_accuracy", "box_iou", "box_correct", "n")
        ]
        cells += [faith.get("deletion_auc"), faith.get("insertion_auc"), faith.get("n")]
        cells.append(None if san is None else san["depends_on_weights"])
        rows.append(f"<tr><td>{_e(method)}</td>{''.join(_cell(c) for c in cells)}</tr>")
        if faith.get("deletion_curve"):
            charts.append(
                line_chart(
                    {"deletion": faith["deletion_curve"], "insertion": faith["insertion_curve"]},
                    title=f"{method}: mean target logit",
                    x_ends=("0", "1 (fraction of pixels)"),
                )
            )
        if san:
            sanity.append(
                line_chart(
                    {method: [1.0, *san["correlations"]]},
                    title=f"{method}: Spearman vs layers randomised",
                    x_ends=("0", str(len(san["correlations"]))),
                )
            )
    caveat = next(
        (m["sanity"]["caveat"] for m in audit["methods"].values() if m.get("sanity")), None
    )
    sanity_html = (
        f'<h3>Sanity check (cascading randomisation)</h3><div class="grid">'
        f'{"".join(sanity)}</div><p class="caveat">{_e(caveat)}</p>'
        if caveat
        else "<p class='muted'>No sanity check in this audit.</p>"
    )
    return (
        f"<h2>Methods</h2><table>{head}{''.join(rows)}</table>"
        f"<h3>Deletion / insertion</h3><div class='grid'>{''.join(charts)}</div>"
        f"{sanity_html}"
    )


def _class_section(audit: dict, manifest: dict[str, dict]) -> str:
    names = {str(m["prediction_class"]): m["prediction_name"] for m in manifest.values()
             if m.get("prediction_name")}  # fmt: skip
    methods = list(audit["methods"])
    head = "".join(
        f"<th>{_e(h)}</th>"
        for h in [
            "class",
            "count",
            "accuracy",
            "confidence",
            "flags",
            *(f"{m} pointing" for m in methods),
            *(f"{m} deletion AUC" for m in methods),
        ]
    )
    rows, blocks = [], []
    for cid, entry in audit["classes"].items():
        per = entry["methods"]
        cells = [entry["count"], entry["accuracy"], entry["mean_confidence"], len(entry["flags"])]
        cells += [per.get(m, {}).get("metrics", {}).get("pointing") for m in methods]
        cells += [per.get(m, {}).get("metrics", {}).get("deletion_auc") for m in methods]
        label = f"{cid} {names[cid]}" if cid in names else cid
        link = f'<a href="#class-{_e(cid)}">{_e(label)}</a>'
        rows.append(f"<tr><td>{link}</td>{''.join(_cell(c) for c in cells)}</tr>")
        maps = "".join(_img(_in_audit_dir(per[m]["mean_map"]), f"{m} mean") for m in per)
        flags = []
        for flag in entry["flags"]:
            ev = flag["evidence"]
            proto = next(
                (
                    c["prototype"]
                    for c in entry["clusters"]
                    if c["method"] == flag["method"] and c["cluster"] == flag["cluster"]
                ),
                None,
            )
            proto_html = _img(_in_audit_dir(proto), "prototype") if proto else ""
            flags.append(
                f'<div><p class="flag">{_e(flag["kind"])} ({_e(flag["method"])}, cluster '
                f"{_e(flag['cluster'])}, {len(flag['members'])} members): {_e(ev['measured'])} "
                f"= {_num(ev['value'])} (threshold {_num(ev['threshold'])})</p>"
                f'<div class="grid">{proto_html}</div>'
                f"{_thumbs(flag['members'], flag['method'], manifest)}</div>"
            )
        clusters = "".join(
            _img(_in_audit_dir(c["prototype"]), f"{c['method']} #{c['cluster']} ({c['size']})")
            for c in entry["clusters"]
        )
        hists = "".join(
            histogram(h, title=f"{m} {name}")
            for m in per
            for name, h in sorted(per[m]["histograms"].items())
            if name in ("pointing", "energy_in_box", "gini", "border_mass")
        )
        summary = f"class {_e(label)}: {entry['count']} records" + (
            f', <span class="flag">{len(entry["flags"])} flag(s)</span>' if entry["flags"] else ""
        )
        blocks.append(
            f'<details id="class-{_e(cid)}"{" open" if entry["flags"] else ""}><summary>'
            f'{summary}</summary><div class="grid">{maps}</div>{"".join(flags)}'
            f'<h4>Clusters</h4><div class="grid">{clusters or "none"}</div>'
            f'<div class="grid">{hists}</div></details>'
        )
    return (
        f"<h2>Classes</h2><p class='muted'>Click a column to sort.</p>"
        f'<table id="classes"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
        f"</tbody></table>{''.join(blocks)}"
    )


def _examples_section(rows: list[dict], manifest: dict[str, dict]) -> str:
    scored = [r for r in rows if r.get("energy_in_box") is not None]
    if not scored:
        return "<h2>Localisation examples</h2><p class='muted'>No annotations.</p>"
    out = ["<h2>Localisation examples (energy in box)</h2>"]
    for method in sorted({r["method"] for r in scored}):
        mine = sorted(
            (r for r in scored if r["method"] == method),
            key=lambda r: (r["energy_in_box"], r["key"]),
        )
        energy = {r["key"]: r["energy_in_box"] for r in mine}

        def label(key: str, energy: dict = energy) -> str:
            return f"{energy[key]:.2f}"

        best = [r["key"] for r in reversed(mine)]
        worst = [r["key"] for r in mine]
        out.append(
            f"<h3>{_e(method)}: best</h3>{_thumbs(best, method, manifest, label)}"
            f"<h3>{_e(method)}: worst</h3>{_thumbs(worst, method, manifest, label)}"
        )
    return "".join(out)


def _errors_section(audit: dict) -> str:
    errors = audit.get("errors") or {}
    if not errors:
        return ""
    rows = "".join(
        f"<tr><td>{_e(e['label'])}</td><td>{_e(e['prediction'])}</td><td>{e['count']}</td>"
        f"<td>{''.join(_img(_in_audit_dir(m['mean_map']), name) for name, m in e['methods'].items())}</td></tr>"  # noqa: E501
        for e in sorted(errors.values(), key=lambda e: -e["count"])
    )
    return (
        f"<h2>Errors (label, prediction)</h2><table><tr><th>label</th><th>prediction</th>"
        f"<th>count</th><th>mean maps</th></tr>{rows}</table>"
    )


def _drift_section(drift: dict | None) -> str:
    if drift is None:
        return ""
    broken = "".join(f'<li class="flag">{_e(line)}</li>' for line in drift.get("broken", []))
    rows = []
    for method, numbers in drift["methods"].items():
        for name, c in numbers.items():
            if c["change"] is not None:
                rows.append(f"<tr><td>{_e(method)} {_e(name)}</td>{_cell(c['before'])}"
                            f"{_cell(c['after'])}{_cell(c['change'])}</tr>")  # fmt: skip
    classes = []
    for c in drift["classes"][:20]:
        for method, m in c["methods"].items():
            new = ", ".join(m["flags_appeared"]) or "-"
            gone = ", ".join(m["flags_gone"]) or "-"
            sizes = m.get("clusters", {})
            clusters = f"{sizes.get('before', [])} -> {sizes.get('after', [])}"
            classes.append(
                f"<tr><td>{_e(c['class'])}</td><td>{_e(method)}</td>"
                f"{_cell(m['similarity'])}{_cell(m['change_score'])}"
                f"<td>{_e(clusters)}</td><td>{_e(new)}</td><td>{_e(gone)}</td></tr>"
            )
    return (
        f"<h2>What changed since audits/{_e(drift.get('previous', '?'))}</h2>"
        f"<p>records {drift['records']['before']} -> {drift['records']['after']}, flags "
        f"{drift['flags']['before']} -> {drift['flags']['after']}</p>"
        + (f"<ul>{broken}</ul>" if broken else "<p>No gating rule broke.</p>")
        + "<table><tr><th>metric</th><th>before</th><th>after</th><th>change</th></tr>"
        + "".join(rows)
        + "</table><h3>Classes by change</h3><table><tr><th>class</th><th>method</th>"
        "<th>mean-map similarity</th><th>change</th><th>cluster sizes</th><th>flags new</th>"
        "<th>flags gone</th></tr>" + "".join(classes) + "</table>"
    )


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
    flags = sum(len(c["flags"]) for c in audit["classes"].values())
    title = f"Saliency audit: {audit['records']} records, {len(audit['classes'])} classes"
    body = "".join(
        [
            f"<h1>{_e(title)}</h1>",
            f'<p>{flags} flag(s). <span id="broken"></span></p>',
            _run_section(summary or {}, settings or {}, failures or [], fingerprint),
            _drift_section(drift),
            _methods_section(audit),
            _class_section(audit, by_key),
            _errors_section(audit),
            _examples_section(rows or [], by_key),
        ]
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}'
        f"</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>{body}"
        "<script>document.querySelectorAll('#classes th').forEach(th=>th.onclick=()=>"
        "sortTable(th));</script></body></html>"
    )
