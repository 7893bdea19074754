"""What the exporters (TensorBoard, FiftyOne) share: the extra they need, and a local
output dir."""

from __future__ import annotations


def install_line(extra: str, what: str) -> str:
    """The line saying that ``what`` needs ``extra`` and how to install it."""
    return (f"{what} needs the {extra} extra: pip install -c constraints.txt "
            f"'saliency-pipeline[{extra}]'")  # fmt: skip


def local_dir(output_dir: str, why: str) -> str:
    """``output_dir`` as a local path (file:// accepted); ValueError for gs:// or s3://,
    saying ``why`` and how to copy it here."""
    out = output_dir.rstrip("/")
    if "://" in out and not out.startswith("file://"):
        raise ValueError(
            f"output dir {output_dir!r}: {why}; copy the output dir here first "
            "(gsutil -m cp -r / aws s3 sync) and export that."
        )
    return out.removeprefix("file://")
