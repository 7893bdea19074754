"""Fixtures shared by the test modules (none of them defines its own copy); the helpers
they share (the one way to run the command line in a subprocess, object-store servers, tiny
models, synthetic data) are pipeline.testing's, which benchmarks/ uses too.

- ``default_run``: the README's quick start, once per session: ``python -m pipeline run
  --config configs/local.yaml`` into a temporary output dir. Tests only read it; a test
  that changes an output dir takes ``default_run_copy``.
- ``tiny_model``: the reliability tests' tiny guided-patchable classifier, saved once.
- ``photos``: the example photos, shrunk and re-encoded in their own formats.

The fast lane is ``pytest -m "not slow"``: every subprocess, training, server and browser
test is marked ``slow`` (CI runs them all).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import keras
import pytest

from pipeline.testing.images import small_photos
from pipeline.testing.processes import run_cli
from pipeline.testing.reliability import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class DefaultRun:
    """The quick start's output dir and what the command printed."""

    out: Path
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> DefaultRun:
    out = tmp_path_factory.mktemp("default") / "out"
    proc = run_cli("run", "--config", "configs/local.yaml", "--set", f"output.dir={out}",
                   env=dict(os.environ), timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return DefaultRun(out=out, stdout=proc.stdout, stderr=proc.stderr)


@pytest.fixture()
def default_run_copy(default_run, tmp_path) -> Path:
    """A copy of the default run's output dir that a test may change."""
    out = tmp_path / "default-copy"
    shutil.copytree(default_run.out, out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return save_tiny_model(str(tmp_path_factory.mktemp("model") / "tiny.keras"))


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """The example photos, shrunk to 64x48 and re-encoded in their own format."""
    return small_photos()


@pytest.fixture(autouse=True)
def _fast_lane_guard(request, monkeypatch):
    """The fast lane stays fast by construction: a test not marked ``slow`` that starts a
    process or trains a model fails, saying so."""
    if request.node.get_closest_marker("slow"):
        return

    def refuse(*args, **kwargs):
        raise AssertionError(
            f"{request.node.nodeid} starts a process or trains a model: mark it "
            "@pytest.mark.slow (the fast lane, pytest -m 'not slow', runs neither)"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(keras.Model, "fit", refuse)
