"""index.html: one card per manifest row, paged, relative links only."""

from pipeline.maps.contact_sheet import PAGE_SIZE, contact_sheet
from pipeline.store.layout import index_page


def _row(i: int) -> dict:
    views = {
        "overlay": f"artifacts/{i}/guided_overlay.png",
        "grid": f"artifacts/{i}/guided_grid.png",
    }
    return {"key": f"img/{i:04d}.png", "prediction_class": i % 3, "prediction_probability": 0.5,
            "label": -1, "artifacts": {"guided": views}}  # fmt: skip


def test_pages_cards_and_links():
    rows = [_row(i) for i in range(2 * PAGE_SIZE + 50)]
    pages = contact_sheet(rows, title="run <1>", page_name=index_page, report="audit/report.html")
    assert list(pages) == ["index.html", "index-2.html", "index-3.html"]
    first, last = pages["index.html"], pages["index-3.html"]
    assert first.count("<figure>") == PAGE_SIZE and last.count("<figure>") == 50
    assert 'href="index-2.html"' in first and 'href="index.html"' in last
    assert 'src="artifacts/0/guided_overlay.png"' in first
    assert 'href="artifacts/0/guided_grid.png"' in first and "run &lt;1&gt;" in first
    assert 'href="audit/report.html"' in first
    assert "http" not in first
    empty = contact_sheet([], title="t", page_name=index_page)
    assert list(empty) == ["index.html"] and "No records." in empty["index.html"]
