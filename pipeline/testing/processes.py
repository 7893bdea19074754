"""The one way tests and benchmarks run ``python -m pipeline`` in a subprocess: from the
checkout's root (configs/ paths are relative to it), with this interpreter and environment,
TensorFlow's C++ log lines kept to warnings."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout (configs/, examples/)
TIMEOUT_S = 600


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, TF_CPP_MIN_LOG_LEVEL=2 unless set, plus ``extra``."""
    return {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ, **(extra or {})}


def cli_command(args: Sequence[str]) -> list[str]:
    """The argv of ``python -m pipeline ARGS`` with this interpreter."""
    return [sys.executable, "-m", "pipeline", *args]


def run_cli(
    *args: str,
    cwd: Path | str = ROOT,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = TIMEOUT_S,
) -> subprocess.CompletedProcess:
    """Run ``python -m pipeline ARGS`` to the end; stdout / stderr captured as text.
    ``env`` replaces the environment (``cli_env()`` by default); ``extra_env`` adds to it."""
    environment = dict(env) if env is not None else cli_env()
    environment.update(extra_env or {})
    return subprocess.run(cli_command(args), cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def start_cli(
    args: Sequence[str], *, extra_env: Mapping[str, str] | None = None, **popen
) -> subprocess.Popen:
    """Start ``python -m pipeline ARGS`` in its own process group (a kill reaches every
    child) and return at once; ``popen``: Popen's own arguments (stdout=, stderr=, ...)."""
    return subprocess.Popen(cli_command(args), cwd=ROOT, env=cli_env(extra_env),
                            start_new_session=True, **popen)  # fmt: skip
