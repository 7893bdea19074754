"""Write OUTPUT/index.html (and its further pages) from the published manifest."""

from apache_beam.io.filesystems import FileSystems

from pipeline.maps.contact_sheet import contact_sheet
from pipeline.store.files import write_atomic
from pipeline.store.layout import AUDIT_REPORT, index_page, join_path
from pipeline.store.manifest import read_manifest


def write_index(output_dir: str, *, title: str) -> list[str]:
    """The contact sheet's pages of ``output_dir``; returns their paths."""
    rows = read_manifest(output_dir)
    has_report = FileSystems.exists(join_path(output_dir, AUDIT_REPORT))
    pages = contact_sheet(rows, title=title, page_name=index_page,
                          report=AUDIT_REPORT if has_report else "")  # fmt: skip
    return [
        write_atomic(join_path(output_dir, name), page.encode("utf-8"), mime_type="text/html")
        for name, page in pages.items()
    ]
