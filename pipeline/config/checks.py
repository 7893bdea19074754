"""Config checks: each raises ConfigError naming the key, the value, what is allowed and the fix."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Sequence
from typing import Any


class ConfigError(ValueError):
    """Invalid config values; each message names the key, the value and the fix.

    ``errors``: every problem found (a config file is checked whole, not up to its first
    mistake); ``str()`` joins them one per line.
    """

    def __init__(self, *errors: str) -> None:
        self.errors = [str(e) for e in errors] or ["invalid config"]
        super().__init__("\n".join(self.errors))


def fail(key: str, value: Any, allowed: str, fix: str = "") -> typing.NoReturn:
    message = f"config key '{key}': got {value!r}; {allowed}."
    if fix:
        message += f" Fix: {fix}" + ("" if fix.endswith(("?", ".")) else ".")
    raise ConfigError(message)


def check_choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(choices)}"
        fail(key, value, f"allowed values are {list(choices)}", hint)


def check_int(key: str, value: Any, *, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(key, value, "an integer is required", f"set {key} to a whole number")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        fail(key, value, f"it must be {bound}", f"set {key} within that range")


def check_number(key: str, value: Any, *, minimum: float, maximum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(key, value, "a number is required", f"set {key} to a number")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        fail(key, value, f"it must be {bound}", f"set {key} within that range")


def check_str(key: str, value: Any, *, empty_ok: bool = False) -> None:
    if not isinstance(value, str):
        fail(key, value, "a string is required", f"quote the value of {key}")
    if not empty_ok and not value.strip():
        fail(key, value, "it must not be empty", f"set {key}")


def check_faithfulness(prefix: str, steps: Any, baseline: Any, fraction: Any) -> None:
    """The deletion / insertion settings, for the audit section (prefix "audit.") and for
    ExplainImages' keyword options (prefix "")."""
    check_int(f"{prefix}faithfulness_steps", steps, minimum=0, maximum=1000)
    check_number(f"{prefix}faithfulness_baseline", baseline, minimum=-1e6, maximum=1e6)
    check_number(f"{prefix}faithfulness_fraction", fraction, minimum=0.0, maximum=1.0)
