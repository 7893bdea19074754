"""The README's quick start, through the real command line, on the bundled default.

It also checks that the shipped model and its maps do what the README says: every bundled
example is classified as the shape it shows, and the saliency mass concentrates on the
pasted shape (whose box is known from examples/images/annotations.json).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.store import records
from pipeline.testing.processes import run_cli

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd, extra_env={"TF_CPP_MIN_LOG_LEVEL": "2"})


@pytest.mark.slow
def test_quick_start_explains_every_bundled_image(default_run):
    out = default_run.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == 12
    assert summary["images_written"] == 12
    assert summary["images_failed"] == 0
    assert summary["reconciled"] is True
    assert "12 of 12 images explained" in default_run.stdout
    assert (out / "failures.jsonl").read_text() == ""


@pytest.mark.slow
def test_shipped_model_finds_the_shapes(default_run):
    out = default_run.out
    annotations = {
        a["file"]: a for a in json.loads((ROOT / "examples/images/annotations.json").read_text())
    }
    decoded = list(records.read(str(out)))
    assert len(decoded) == 12
    for rec in decoded:
        ann = annotations[rec.key]
        assert rec.prediction_class == ann["label"], rec.key
        y0, x0, y1, x1 = (v * rec.height / ann["size"] for v in ann["box"])
        inside = np.zeros((rec.height, rec.width), bool)
        inside[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
        m = rec.maps["smoothgrad"]["abs"]
        share = float(m[inside].sum() / m.sum())
        # More of the map lies on the shape than the shape's share of the image.
        assert share > 1.2 * inside.mean(), (rec.key, share, inside.mean())


@pytest.mark.slow
def test_validate_prints_the_resolved_config():
    proc = _cli("validate", "--config", "configs/local.yaml", "--set", "saliency.samples=7")
    assert proc.returncode == 0, proc.stderr
    assert "samples: 7" in proc.stdout
    assert "methods:" in proc.stdout


@pytest.mark.slow
def test_invalid_config_exits_2_naming_key_and_fix():
    proc = _cli("run", "--config", "configs/local.yaml", "--set", "saliency.methods=[guidd]")
    assert proc.returncode == 2
    assert "saliency.methods" in proc.stderr and "did you mean 'guided'" in proc.stderr


@pytest.mark.slow
def test_unloadable_model_exits_4_before_reading(tmp_path):
    # A well-formed .keras archive (the file checks pass: exit 2 is for missing / corrupt
    # files) whose config Keras cannot build.
    import zipfile

    bad = tmp_path / "unbuildable.keras"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("config.json", '{"module": "keras.layers", "class_name": "Nope"}')
        archive.writestr("metadata.json", '{"keras_version": "3.15.1"}')
    out = tmp_path / "out"
    proc = _cli(
        "run",
        "--config",
        "configs/local.yaml",
        "--set",
        f"model.name={bad}",
        "--set",
        f"output.dir={out}",
    )
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "could not be loaded" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1  # one line, not Keras's whole config
    assert not out.exists()
