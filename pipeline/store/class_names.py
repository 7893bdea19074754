"""Class names from ``model.class_names``: a list, or a file on any Beam filesystem (one
name per line; a JSON list; or Keras's ImageNet index, imagenet_class_index.json, as
{"0": ["n01440764", "tench"], ...}: Keras downloads it, so point at a local copy)."""

import json

from pipeline.config import SourceConfig
from pipeline.config.checks import ConfigError
from pipeline.store.files import read_text
from pipeline.store.listing import class_folders, source_root


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


def folder_class_names(source: SourceConfig, num_classes: int) -> tuple[str, ...]:
    """The class folders of a ``source.labels: folders`` source, sorted (() for any other
    source); ConfigError unless they are as many as the model's ``num_classes``."""
    if source.labels != "folders":
        return ()
    root = source_root(source.pattern)
    try:
        folders = class_folders(root)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"source.labels: {exc}") from exc
    if len(folders) != num_classes:
        shown = ", ".join(folders[:8]) + (", ..." if len(folders) > 8 else "")
        raise ConfigError(
            f"source.labels: folders: {len(folders)} class folders below {root!r} ({shown}) "
            f"for a model with {num_classes} classes; give one folder per class (ids follow "
            "the sorted folder names)"
        )
    return folders


def class_name(names: tuple[str, ...], class_id: int) -> str:
    """The name of ``class_id``, "" when unnamed."""
    return names[class_id] if 0 <= class_id < len(names) else ""
