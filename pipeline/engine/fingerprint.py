"""Stable model fingerprints: architecture (auto-generated names canonicalised) + weights."""

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import keras
import numpy as np


def _canonical_config(model: keras.Model) -> str:
    """The model's JSON config with layer names replaced by their order of appearance.

    Auto-generated names ("re_lu_7") depend on what was built earlier in the process, so
    they are renamed; everything else (classes, options, wiring) is kept.
    """
    config = keras.saving.serialize_keras_object(model)
    names: dict[str, str] = {}

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            name = node.get("name")
            if isinstance(name, str) and name not in names:
                names[name] = f"#{len(names)}"
            for value in node.values():
                collect(value)
        elif isinstance(node, list | tuple):
            for value in node:
                collect(value)

    def rename(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: rename(value) for key, value in node.items()}
        if isinstance(node, list | tuple):
            return [rename(value) for value in node]
        if isinstance(node, str):
            return names.get(node, node)
        return node

    collect(config)
    return json.dumps(rename(config), sort_keys=True, default=str)


def fingerprint(model: keras.Model) -> str:
    """sha256 hex over the model's (name-canonical) JSON config and all weight bytes."""
    digest = hashlib.sha256(_canonical_config(model).encode())
    for variable in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def directory_digest(path: str) -> str:
    """sha256 over a SavedModel directory (relative paths and file bytes, sorted)."""
    digest = hashlib.sha256()
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(functools.partial(handle.read, 1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
