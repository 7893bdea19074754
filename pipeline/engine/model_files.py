"""Checks of a model file before it is loaded: missing vs corrupt vs custom objects needed.

No TensorFlow here (keras is imported only to look up registered classes), so a bad model
file is reported in one line before any weights are read. ``custom_objects`` are import
paths ``"module:attr"`` of the user's own layers / functions, passed to Keras (safe mode
stays on).
"""

import importlib
import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

from pipeline.choices import GUIDED_METHODS

MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def looks_like_path(name: str) -> bool:
    """A model name that is a file path (not a keras.applications name)."""
    return (
        "/" in name
        or os.sep in name
        or "://" in name
        or name.lower().endswith(MODEL_FILE_SUFFIXES)
        or os.path.exists(name)
    )


def resolve_custom_objects(paths: Sequence[str]) -> dict[str, Any]:
    """``{"Name": object}`` for each ``"module:attr"``; ValueError names a bad path."""
    found: dict[str, Any] = {}
    for path in paths:
        module_name, _, attr = str(path).partition(":")
        if not module_name or not attr:
            raise ValueError(
                f"model.custom_objects: {path!r} is not an import path 'module:attr' "
                "(e.g. 'my_project.layers:MyLayer')."
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(
                f"model.custom_objects: cannot import module {module_name!r} ({exc}). Fix: "
                "install it or put it on PYTHONPATH."
            ) from exc
        try:
            obj = getattr(module, attr)
        except AttributeError as exc:
            raise ValueError(
                f"model.custom_objects: module {module_name!r} has no attribute {attr!r}."
            ) from exc
        found[attr] = obj
        found[getattr(obj, "__name__", attr)] = obj
    return found


def _custom_classes(node: Any) -> Iterator[tuple[str, str, str]]:
    """(class_name, module, registered_name) of every non-Keras object in a saved config."""
    if isinstance(node, dict):
        module = node.get("module")
        name = node.get("class_name")
        if (
            isinstance(module, str)
            and isinstance(name, str)
            and not module.startswith(("keras", "builtins"))
        ):
            yield name, module, str(node.get("registered_name") or name)
        for value in node.values():
            yield from _custom_classes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _custom_classes(value)


def is_saved_model(name: str) -> bool:
    """Whether ``name`` is a local TensorFlow SavedModel directory (it loads as a TFSMLayer,
    whose graph no Keras rewrite reaches)."""
    if not looks_like_path(name) or ("://" in name and not name.startswith("file://")):
        return False
    local = name.removeprefix("file://")
    return os.path.isdir(local) and os.path.exists(os.path.join(local, "saved_model.pb"))


def method_problem(name: str, methods: Sequence[str]) -> str | None:
    """One line when the methods cannot run on this model file (guided backprop rewrites
    Keras activations, which a SavedModel does not expose), or None."""
    guided = [m for m in methods if m in GUIDED_METHODS]
    if guided and is_saved_model(name):
        return (
            f"saliency.methods {guided}: guided backprop rewrites the model's Keras "
            f"activations, and model.name {name!r} is a TensorFlow SavedModel (no Keras "
            "layers to rewrite). Fix: save the Keras model as .keras (model.save('m.keras')), "
            "or use vanilla / smoothgrad / integrated_gradients."
        )
    return None


def model_file_problem(name: str, custom_objects: Sequence[str] = ()) -> str | None:
    """One line saying what is wrong with a local model file, or None.

    Missing, a directory that is no SavedModel, a .keras that is no Keras archive, an .h5
    that is no HDF5 file, or a .keras whose layers need custom objects that are neither
    registered nor named in ``custom_objects``. Remote paths and keras.applications names
    are not checked here.
    """
    if not looks_like_path(name) or ("://" in name and not name.startswith("file://")):
        return None
    local = name.removeprefix("file://")
    if not os.path.exists(local):
        return f"model.name {name!r}: no such file or directory. Fix: check the path."
    if os.path.isdir(local):
        if not os.path.exists(os.path.join(local, "saved_model.pb")):
            return (
                f"model.name {name!r} is a directory without saved_model.pb: not a SavedModel. "
                "Fix: point at a .keras file or a SavedModel directory."
            )
        return None
    lower = local.lower()
    if lower.endswith((".h5", ".hdf5")):
        with open(local, "rb") as handle:
            if handle.read(8) != _HDF5_SIGNATURE:
                return (
                    f"model.name {name!r} is not an HDF5 file (corrupt or truncated). Fix: "
                    "save the model again."
                )
        return None
    if not lower.endswith(".keras"):
        return (
            f"model.name {name!r}: unsupported model file; expected one of "
            f"{list(MODEL_FILE_SUFFIXES)} or a SavedModel directory."
        )
    try:
        with zipfile.ZipFile(local) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        return (
            f"model.name {name!r} is not a valid .keras archive ({type(exc).__name__}): it is "
            "corrupt or truncated. Fix: save the model again with model.save(path)."
        )
    return _missing_custom_objects(name, config, custom_objects)


def _missing_custom_objects(name: str, config: Any, custom_objects: Sequence[str]) -> str | None:
    try:
        given = resolve_custom_objects(custom_objects)
    except ValueError as exc:
        return str(exc)
    import keras  # the registry of @register_keras_serializable classes (ours included)

    missing = []
    for class_name, module, registered in _custom_classes(config):
        if class_name in given or registered in given:
            continue
        if keras.saving.get_registered_object(registered) is not None:
            continue
        missing.append(f"{class_name} (module {module!r})")
    if not missing:
        return None
    missing = sorted(set(missing))
    example = missing[0].split(" ")[0]
    return (
        f"model.name {name!r} needs custom objects that are not registered: "
        f"{', '.join(missing)}. Fix: set model.custom_objects to their import paths, e.g. "
        f"--set \"model.custom_objects=['your_module:{example}']\" (loaded in safe mode)."
    )
