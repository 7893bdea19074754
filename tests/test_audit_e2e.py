"""The audit end to end: the default job with the audit on, its outputs read back and
reconciled with the manifest; `audit` over an incremental output dir covers every record."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.audit.rows import parse_annotations
from pipeline.store.files import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT,
                          env=dict(os.environ), capture_output=True, text=True,
                          timeout=600)  # fmt: skip


@pytest.mark.slow
def test_the_default_job_audits_its_records(tmp_path):
    out = tmp_path / "out"
    proc = _cli("run", "--config", "configs/local.yaml", "--set", f"output.dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert "audit: 12 records, 5 classes" in proc.stderr
    manifest = read_jsonl(str(out / "manifest.jsonl"))
    audit = json.loads((out / "audit" / "audit.json").read_text())
    rows = read_jsonl(str(out / "audit" / "rows.jsonl"))
    methods = ["guided", "smoothgrad", "vanilla"]
    assert audit["records"] == len(manifest) == 12 and sorted(audit["methods"]) == methods
    assert len(rows) == 12 * 3 and {r["key"] for r in rows} == {m["key"] for m in manifest}
    by_class: dict[str, int] = {}
    for m in manifest:
        by_class[str(m["prediction_class"])] = by_class.get(str(m["prediction_class"]), 0) + 1
    assert {c: v["count"] for c, v in audit["classes"].items()} == by_class
    for entry in audit["classes"].values():
        assert entry["accuracy"] == 1.0  # labels from the sidecar; the model gets all 12
        for part in entry["methods"].values():
            assert (out / part["mean_map"]).is_file()
        for cluster in entry["clusters"]:
            assert (out / cluster["prototype"]).is_file()
    for method in methods:
        loc = audit["methods"][method]["localisation"]
        assert loc["n"] == 12
        mine = [r for r in rows if r["method"] == method]
        assert loc["pointing"] == pytest.approx(sum(r["pointing"] for r in mine) / 12)
    # The shapes model looks at the shapes: guided's maps point into the box on most images.
    assert audit["methods"]["guided"]["localisation"]["pointing"] >= 0.75
    assert audit["methods"]["guided"]["localisation"]["energy_in_box"] > 0.5


@pytest.mark.slow
def test_audit_covers_an_incremental_output_dir(tmp_path):
    out = tmp_path / "out"
    common = ["--config", "configs/local.yaml", "--set", f"output.dir={out}",
              "--set", "run.incremental=true", "--set", "audit.enabled=false", "-q"]  # fmt: skip
    assert _cli("run", *common, "--set", "source.limit=5").returncode == 0
    assert _cli("run", *common).returncode == 0  # 7 new, 5 done
    proc = _cli("audit", "--config", "configs/local.yaml", "--set", f"output.dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("audit: 12 records")
    keys = {r["key"] for r in read_jsonl(str(out / "audit" / "rows.jsonl"))}
    assert keys == {m["key"] for m in read_jsonl(str(out / "manifest.jsonl"))}


def test_annotation_sidecar_errors_name_the_line_and_the_fix():
    good = parse_annotations('{"key": "a.jpg", "boxes": [[0, 1, 10, 12]], "label": 2}\n')
    assert good["a.jpg"].boxes == ((0.0, 1.0, 10.0, 12.0),) and good["a.jpg"].label == 2
    with pytest.raises(ValueError, match="line 2: boxes"):
        parse_annotations('{"key": "a"}\n{"key": "b", "boxes": [[5, 0, 1, 1]]}\n')
    with pytest.raises(ValueError, match="line 1: not JSON"):
        parse_annotations("{nope\n")
    with pytest.raises(ValueError, match="appears twice"):
        parse_annotations('{"key": "a"}\n{"key": "a"}\n')
