"""OUTPUT/index.html: the run's contact sheet, from its manifest rows. One thumbnail per
record (its first method's overlay), key, class, probability and links to every artifact;
PAGE_SIZE records per page (index.html, index-2.html, ...) so a large run stays quick to
open. Plain HTML, relative links, nothing from the network."""

import html
from collections.abc import Callable

PAGE_SIZE = 200
# Marks the body data-images-ok once every image loaded (the browser test reads it) and
# says on the page which did not.
IMAGE_CHECK = (
    "<script>window.addEventListener('load',()=>{const bad=[...document.images].filter("
    "i=>!(i.complete&&i.naturalWidth>0));document.body.dataset.imagesOk=bad.length?'false':"
    "'true';if(bad.length){document.getElementById('broken').textContent=bad.length+"
    "' image(s) did not load'}});</script>"
)


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _card(row: dict) -> str:
    artifacts = row.get("artifacts", {})
    thumb = next((views.get("overlay") or views.get("heatmap") for views in artifacts.values()
                  if views.get("overlay") or views.get("heatmap")), None)  # fmt: skip
    links = " ".join(
        f'<a href="{_e(path)}">{_e(method)} {_e(view)}</a>'
        for method, views in sorted(artifacts.items())
        for view, path in sorted(views.items())
    )
    label = row.get("label", -1)
    truth = f", label {_e(label)}" if isinstance(label, int) and label >= 0 else ""
    image = f'<img src="{_e(thumb)}" alt="{_e(row["key"])}">' if thumb else "(no artifact)"
    name = row.get("prediction_name")
    cls = f"{_e(row['prediction_class'])}" + (f" {_e(name)}" if name else "")
    return (
        f"<figure>{image}<figcaption><b>{_e(row['key'])}</b><br>class {cls}, "
        f"p = {float(row['prediction_probability']):.3f}{truth}<br>{links}</figcaption></figure>"
    )


def contact_sheet(
    rows: list[dict], *, title: str, page_name: Callable[[int], str], report: str = ""
) -> dict[str, str]:
    """{file name: HTML} of every page (at least the first, even for an empty run);
    ``page_name(n)`` names page n (1-based); ``report``: the audit report's relative path."""
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    report = f' | <a href="{_e(report)}">audit report</a>' if report else ""
    out = {}
    for page in range(1, pages + 1):
        part = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        nav = " ".join(
            f"<b>{p}</b>" if p == page else f'<a href="{page_name(p)}">{p}</a>'
            for p in range(1, pages + 1)
        )
        body = "".join(_card(r) for r in part) or "<p>No records.</p>"
        out[page_name(page)] = (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}'
            "</title><style>body{font:13px system-ui,sans-serif;margin:20px}"
            ".sheet{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;width:200px}"
            "img{width:192px;height:192px;object-fit:contain;image-rendering:pixelated;"
            "border:1px solid #ccc}figcaption{overflow-wrap:anywhere}"
            "figcaption a{white-space:nowrap}</style></head><body>"
            f"<h1>{_e(title)}</h1><p>{len(rows)} records, page {page} of {pages}: {nav}"
            f"{report} <span id='broken'></span></p><div class='sheet'>{body}</div><p>{nav}</p>"
            f"{IMAGE_CHECK}</body></html>"
        )
    return out
