"""Config files: YAML + ``--set`` overrides -> a checked Config, every error at once."""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from pipeline.config.beam import BeamConfig
from pipeline.config.checks import ConfigError, fail
from pipeline.config.sections import SECTIONS, Config


def _unknown_key(key: str, known: Sequence[str]) -> typing.NoReturn:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(sorted(known))}"
    raise ConfigError(f"unknown config key '{key}'. Fix: {hint}")


def _coerce(value: Any, annotation: Any) -> Any:
    """Light type coercion of YAML values onto field types (lists -> tuples)."""
    origin = typing.get_origin(annotation)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _coerce(value, args[0])
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _section(name: str, values: Any) -> Any:
    cls = SECTIONS[name]
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        fail(name, values, "a mapping of keys is required", f"write '{name}:' then indented keys")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            _unknown_key(f"{name}.{key}", [f"{name}.{k}" for k in hints])
        kwargs[key] = _coerce(value, hints[key])
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build and validate a Config from a nested mapping (as loaded from YAML).

    Raises ConfigError listing every problem: unknown sections and keys, and each bad
    value (keys are checked one at a time, so one mistake does not hide the next).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config must be a mapping of sections; got {type(data).__name__}")
    errors: list[str] = []
    for name in data:
        if name not in SECTIONS and name != "beam":
            errors += _errors_of(_unknown_key, str(name), [*SECTIONS, "beam"])
    sections = {}
    for name in SECTIONS:
        try:
            sections[name] = _section(name, data.get(name))
        except ConfigError as exc:
            errors += _key_errors(name, data.get(name)) or exc.errors
    try:
        sections["beam"] = _beam_section(data.get("beam"))
    except ConfigError as exc:
        errors += exc.errors
    if errors:
        raise ConfigError(*dict.fromkeys(errors))
    return Config(**sections)


def _beam_section(values: Any) -> BeamConfig:
    """``beam:`` is Beam's own flags, free-form (checked against Beam's options later)."""
    if values is None:
        return BeamConfig()
    if not isinstance(values, Mapping):
        fail("beam", values, "a mapping of Beam flags is required",
             "write 'beam:' then indented flags, e.g. 'runner: DataflowRunner'")  # fmt: skip
    return BeamConfig(options=tuple((k, _coerce(v, tuple[Any, ...])) for k, v in values.items()))


def _errors_of(check: Any, *args: Any) -> list[str]:
    try:
        check(*args)
    except ConfigError as exc:
        return exc.errors
    return []


def _key_errors(name: str, values: Any) -> list[str]:
    """The errors of a section's keys, each checked alone against the defaults (a check
    that needs two keys together is reported by the whole section)."""
    if not isinstance(values, Mapping):
        return []
    errors = []
    for key, value in values.items():
        errors += _errors_of(_section, name, {key: value})
    return errors


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (value parsed as YAML) to a nested mapping."""
    result = {k: dict(v or {}) for k, v in data.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} is not of the form section.key=value. "
                "Fix: write e.g. --set saliency.methods=[guided,smoothgrad]"
            )
        path, raw = item.split("=", 1)
        parts = path.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"override key {path!r} must be section.key (e.g. saliency.samples). "
                f"Sections: {', '.join([*SECTIONS, 'beam'])}"
            )
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        result.setdefault(parts[0], {})[parts[1]] = value
    return result


def _read_text(path: str) -> str:
    if "://" in path:  # gs://, s3://, ...: Beam's filesystems (imported only when needed)
        from apache_beam.io.filesystems import FileSystems

        if not FileSystems.exists(path):
            raise FileNotFoundError(path)
        with FileSystems.open(path) as handle:
            return handle.read().decode("utf-8")
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config file (or the defaults when path is None) plus overrides."""
    data: Mapping[str, Any] = {}
    if path is not None:
        try:
            text = _read_text(str(path))
        except FileNotFoundError as exc:
            raise ConfigError(
                f"config file {str(path)!r} does not exist. Fix: pass --config with a path "
                "such as configs/local.yaml"
            ) from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    return config_from_dict(apply_overrides(data, overrides))
