"""The ``beam:`` config section: Apache Beam's own flags, kept in the YAML."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from pipeline.config.checks import fail

_BEAM_FLAG = re.compile(r"^[a-z][a-z0-9_]*$")
_SCALARS = (str, int, float, bool)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BeamConfig:
    """Apache Beam's own options, as a mapping of flag name to value (``runner:
    DataflowRunner``, ``experiments: [a, b]``, ``no_auth: true``), so that a scheduled job
    is one config file plus secrets. Flags given on the command line come after these (a
    scalar given there wins; list flags add up). Names are checked against Beam's options
    before anything runs."""

    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        for name, value in self.options:
            key = f"beam.{name}"
            if not isinstance(name, str) or not _BEAM_FLAG.match(name):
                fail(key, name, "a Beam flag name without dashes is required",
                     "write e.g. 'runner: DataflowRunner'")  # fmt: skip
            values = value if isinstance(value, (list, tuple)) else [value]
            if not values or not all(isinstance(v, _SCALARS) for v in values):
                fail(key, value, "a string, number, true/false or a list of them is required")

    @property
    def names(self) -> list[str]:
        """The flag names this section sets (for error messages that name the config key)."""
        return [name for name, _ in self.options]

    def flags(self, command_line: Sequence[str] = ()) -> list[str]:
        """This section's flags, then ``command_line``'s (which so win for one value). Every
        function taking ``(config, beam_args)`` calls it once: pass only the command line."""
        return [*self.args(), *command_line]

    def args(self) -> list[str]:
        """The options as Beam command-line flags (true: ``--flag``; false: left out)."""
        flags: list[str] = []
        for name, value in self.options:
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if item is True:
                    flags.append(f"--{name}")
                elif item is not False:
                    flags.append(f"--{name}={item}")
        return flags
