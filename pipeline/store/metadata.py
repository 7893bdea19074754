"""An input's metadata columns (what ``audit.slices`` groups by), plain Python.

A TFRecord input's columns are its single-valued features besides the image, label, key and
boxes: bytes that are UTF-8 text of at most ``MAX_VALUE_CHARS`` characters, int64s and
floats, as text. Records carry them as ``metadata/<name>`` features, so an audit can slice by
them without the inputs. Multi-valued and binary features are left out (they are not
columns to group by).
"""

from collections.abc import Collection, Mapping
from typing import Any

from pipeline.elements import Metadata

METADATA_PREFIX = "metadata/"  # record feature of a column: metadata/<name>, bytes
MAX_COLUMNS = 64  # per input; the first by name
MAX_VALUE_CHARS = 256


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return text if len(text) <= MAX_VALUE_CHARS else None
    if isinstance(value, float):
        return format(value, ".7g")
    return str(value)


def example_metadata(features: Mapping[str, Any], *, skip: Collection[str]) -> Metadata:
    """The columns of a ``tf.train.Example``'s feature map (see the module docstring)."""
    columns = []
    for name in sorted(features):
        if name in skip or name.startswith(METADATA_PREFIX):
            continue
        feature = features[name]
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        text = _text(values[0]) if len(values) == 1 else None
        if text is not None:
            columns.append((name, text))
    return tuple(columns[:MAX_COLUMNS])
