"""The demo through the real job (``python -m pipeline demo``): shortcut scenes on photo
crops, a model trained on them, the run and its audit. The corner text stamp and the thin
frame are flagged and confirmed off the object, their members the planted images; the two
clean classes get no confirmed flag; the report shows the matched windows and the
object-aware test. (The suite, benchmarks/shortcut_suite.py, measures every kind's rates.)"""

import json
import os
from pathlib import Path

import pytest

from pipeline.testing.processes import run_cli

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "out"
    proc = run_cli("demo", "--out", str(out), "--per-class", "120",
                   "--set", "saliency.methods=[vanilla]", "--quiet",
                   env=dict(os.environ), timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _confirmed(audit: dict, names: list[str], cls: str) -> list[dict]:
    flags = audit["classes"][str(names.index(cls))].get("flags", [])
    return [f for f in flags if f.get("confirmation", {}).get("confirmed")]


def test_the_demo_finds_the_planted_shortcuts_and_spares_the_clean_classes(demo):
    audit = json.loads((demo / "audit" / "audit.json").read_text())
    names = (demo / "data" / "classes.txt").read_text().split()
    planted = json.loads((demo / "data" / "planted.json").read_text())["planted"]
    assert audit["records"] == 600
    for cls in ("square", "triangle"):  # the corner text stamp, the thin frame
        found = _confirmed(audit, names, cls)
        assert found, cls
        members = {k for f in found for k in f["members"]}
        assert len(members & set(planted[cls])) >= 0.9 * len(members), cls
        for f in found:
            c = f["confirmation"]
            assert c["verdict"].startswith("confirmed, off the object")
            assert c["object_cover"] < 0.3 and c["logit_drop"]["low"] > 0
    for cls in ("cross", "ring"):  # clean
        assert _confirmed(audit, names, cls) == [], cls
    page = (demo / "audit" / "report.html").read_text()
    assert "share of the region the object covered" in page
    assert 'class="win"' in page or "repeated_pattern" not in json.dumps(audit)
