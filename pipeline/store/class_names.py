"""Class names from ``model.class_names``: a list, or a file on any Beam filesystem (one
name per line; a JSON list; or Keras's ImageNet index, imagenet_class_index.json, as
{"0": ["n01440764", "tench"], ...}: Keras downloads it, so point at a local copy)."""

import json

from pipeline.store.files import read_text
from pipeline.validation import ConfigError


def load_class_names(spec) -> tuple[str, ...]:
    """The names, in class-id order (() when none are configured)."""
    if not isinstance(spec, str):
        return tuple(spec)
    if not spec:
        return ()
    text = read_text(spec)
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"model.class_names {spec}: not valid JSON ({exc}).") from exc
        if isinstance(data, dict):
            try:
                ordered = sorted(data.items(), key=lambda kv: int(kv[0]))
            except ValueError as exc:
                raise ValueError(
                    f"model.class_names {spec}: a JSON object needs class ids as keys"
                ) from exc
            return tuple(str(v[-1] if isinstance(v, list) else v) for _, v in ordered)
        return tuple(str(v) for v in data)
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def configured_class_names(spec) -> tuple[str, ...]:
    """:func:`load_class_names`, with an unreadable file a ConfigError naming
    model.class_names (exit 2 before anything is read)."""
    try:
        return load_class_names(spec)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.class_names: {exc}") from exc


def class_name(names: tuple[str, ...], class_id: int) -> str:
    """The name of ``class_id``, "" when unnamed."""
    return names[class_id] if 0 <= class_id < len(names) else ""
