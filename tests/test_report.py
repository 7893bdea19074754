"""The report's HTML from its Jinja2 templates: every value is escaped, every section is
there, and the templates ship with the package. (tests/test_browser.py opens it in Chromium.)"""

from __future__ import annotations

import ast
from pathlib import Path

from pipeline.audit.report.html import histogram, line_chart, render_report

ROOT = Path(__file__).resolve().parents[1]
EVIL = "<script>alert(1)</script>"


def _audit() -> dict:
    method = {"localisation": {"pointing": 0.5, "n": 2}, "faithfulness": None, "sanity": None}
    entry = {
        "count": 2, "accuracy": 1.0, "mean_confidence": 0.9,
        "methods": {"vanilla": {"mean_map": "audit/maps/vanilla/class_0_mean.png",
                                "metrics": {"pointing": 0.5}, "histograms": {"gini": [1, 0, 1]}}},
        "clusters": [{"method": "vanilla", "cluster": 0, "size": 2, "members": ["a", "b"],
                      "prototype": "audit/maps/vanilla/class_0_cluster_0.png"}],
        "flags": [{"kind": "corner", "method": "vanilla", "cluster": 0, "members": ["a", EVIL],
                   "evidence": {"measured": EVIL, "value": 0.3, "threshold": 0.25}}],
    }  # fmt: skip
    return {"records": 2, "methods": {"vanilla": method}, "classes": {"0": entry}}


def test_every_value_is_escaped():
    manifest = [{"key": "a", "prediction_class": 0, "prediction_name": EVIL, "artifacts": {}}]
    page = render_report(
        _audit(), manifest=manifest, failures=[{"key": EVIL, "stage": "decode", "error": EVIL}],
        settings={"model": {"name": EVIL}}, summary={"model": EVIL},
    )  # fmt: skip
    assert EVIL not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 5
    assert page.count("<script>") == 2  # the page's own: sorting and the image check


def test_sections_flags_and_charts_are_rendered():
    page = render_report(_audit(), rows=[])
    for text in ("<h2>The run</h2>", "<h2>Methods</h2>", "<h2>Classes</h2>",
                 "No sanity check in this audit.", "No annotations.", "No failed inputs.",
                 'class="flag">corner (vanilla, cluster 0, 2 members)', "(threshold 0.250)",
                 'src="maps/vanilla/class_0_cluster_0.png"', "(no artifact)",
                 'data-v="0.5"', "1 flag(s)"):  # fmt: skip
        assert text in page, text
    assert "<h2>What changed" not in page and "<h2>Errors" not in page


def test_chart_coordinates():
    chart = line_chart({"a": [0.0, 1.0]}, title="t", width=100, height=100)
    assert chart["series"][0]["points"] == "40.0,75.0 90.0,20.0"  # left 40, w 50; top 20, h 55
    assert (chart["lo_label"], chart["hi_label"]) == ("0", "1")
    assert line_chart({"a": []}, title="t") is None
    bars = histogram([1, 0, 2], title="h", width=40, height=50)["bars"]
    assert [b["height"] for b in bars] == ["10.0", "0.0", "20.0"]  # (50 - 30) * c / peak
    assert histogram([0, 0], title="h") is None


def test_the_templates_ship_with_the_package():
    tree = ast.parse((ROOT / "setup.py").read_text())
    data = next(k.value for k in ast.walk(tree) if isinstance(k, ast.keyword)
                and k.arg == "package_data")  # fmt: skip
    patterns = {ast.literal_eval(key): ast.literal_eval(value)
                for key, value in zip(data.keys, data.values)}  # fmt: skip
    shipped = {p.name for p in (ROOT / "pipeline/audit/report/templates").iterdir()}
    assert patterns == {"pipeline.audit.report": ["templates/*.j2"]}
    assert shipped == {"report.html.j2", "macros.html.j2"}
