"""FiftyOne: ``python -m pipeline export fiftyone OUT`` makes a real FiftyOne dataset (its own
MongoDB, under a temporary FIFTYONE_DATABASE_DIR) from the quick start's run; another
process loads it back and every sample's fields equal the records and the audit; the real
FiftyOne App serves it on 127.0.0.1 and headless Chromium draws its grid (screenshot under
test-artifacts/fiftyone/)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.audit.report.membership import Membership, memberships
from pipeline.store import records
from pipeline.testing.browser import screenshot
from pipeline.testing.processes import ROOT, run_cli
from pipeline.testing.stores import free_port

ARTIFACTS = ROOT / "test-artifacts" / "fiftyone"

# Loads the dataset in a fresh process, as a user's notebook would, and prints it as JSON.
READ_BACK = """
import json, sys
import fiftyone as fo
ds = fo.load_dataset(sys.argv[1])
schema = sorted(ds.get_field_schema())
samples = {}
for s in ds:
    samples[s["record_id"]] = {
        "filepath": s.filepath, "tags": sorted(s.tags),
        "prediction": [s.prediction.label, s.prediction.confidence],
        "ground_truth": s.ground_truth.label if s.has_field("ground_truth") else None,
        "objects": [d.bounding_box for d in s.objects.detections]
                   if s.has_field("objects") and s.objects else [],
        "maps": {f[:-4]: s[f].map_path for f in schema if f.endswith("_map")},
        "fields": {f: s[f] for f in schema if f.startswith(("vanilla_", "guided_", "smoothgrad_"))
                   and not f.endswith("_map")},
    }
print(json.dumps({"count": len(ds), "persistent": ds.persistent, "schema": schema,
                  "samples": samples}))
"""


def _env(tmp_path) -> dict[str, str]:
    return {**os.environ, "FIFTYONE_DATABASE_DIR": str(tmp_path / "fiftyone-db"),
            "FIFTYONE_DO_NOT_TRACK": "true", "FIFTYONE_ANALYTICS_ENABLED": "false"}  # fmt: skip


@pytest.mark.slow
def test_export_fiftyone_makes_a_dataset_of_the_records_and_the_audit(default_run, tmp_path):
    out = default_run.out
    env = _env(tmp_path)
    done = run_cli("export", "fiftyone", str(out), "--name", "bundled", "--config",
                   "configs/local.yaml", env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "12 samples" in done.stdout and "fiftyone app launch bundled" in done.stdout
    proc = subprocess.run([sys.executable, "-c", READ_BACK, "bundled"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["count"] == 12 and got["persistent"]
    lines = (out / "audit" / "rows.jsonl").read_text().splitlines()
    rows = {(r["record_id"], r["method"]): r for r in map(json.loads, lines)}
    sidecar = (ROOT / "examples" / "images" / "annotations.jsonl").read_text().splitlines()
    annotations = {a["key"]: a for a in map(json.loads, sidecar)}
    manifest = map(json.loads, (out / "manifest.jsonl").read_text().splitlines())
    names = {m["prediction_class"]: m["prediction_name"] for m in manifest}
    assert all(names.values())  # the run had model.class_names
    placed = memberships(json.loads((out / "audit" / "audit.json").read_text()))
    assert any(m.cluster != "-" for m in placed.values())  # the bundled audit has clusters
    for record in records.read(str(out)):
        sample = got["samples"][record.record_id]
        with Image.open(sample["filepath"]) as img:
            np.testing.assert_array_equal(np.asarray(img), record.image)
        assert sample["prediction"][1] == pytest.approx(record.prediction_probability)
        assert sample["prediction"][0] == (record.prediction_name or str(record.prediction_class))
        # the sidecar's label and boxes (original pixels), resized with the image (64 px)
        truth = annotations[record.key]
        assert sample["ground_truth"] == names[truth["label"]]
        oh, ow = record.original_height, record.original_width
        assert [[x, y, x + w, y + h] for x, y, w, h in sample["objects"]] == [
            pytest.approx([x0 / ow, y0 / oh, x1 / ow, y1 / oh]) for y0, x0, y1, x1 in truth["boxes"]
        ]
        assert sorted(sample["maps"]) == sorted(record.methods)
        for method in record.methods:
            with Image.open(sample["maps"][method]) as heat:
                expected = np.round(record.maps[method]["abs"] * 255)
                np.testing.assert_array_equal(np.asarray(heat), expected.astype(np.uint8))
            row = rows[(record.record_id, method)]
            assert sample["fields"][f"{method}_gini"] == pytest.approx(row["gini"])
            assert sample["fields"][f"{method}_pointing"] == pytest.approx(row["pointing"])
            member = placed.get((method, record.record_id))
            cluster = member.cluster if member else "-"
            assert sample["fields"][f"{method}_cluster"] == cluster
            flags = list(member.flags) if member else []
            assert sample["fields"][f"{method}_flags"] == flags
            assert {t for t in sample["tags"] if t.startswith(f"{method}:")} == {
                f"{method}:{k}" for k in flags}  # fmt: skip
    # the App shows the 12 samples: a loading grid has ~2,300 colours, the photos ~38,000
    shot = _app_screenshot("bundled", env)
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 10_000


def _app_screenshot(name: str, env: dict[str, str]) -> np.ndarray:
    """The FiftyOne App's grid of dataset ``name``, drawn by headless Chromium."""
    port = free_port()
    app = subprocess.Popen([str(Path(sys.executable).parent / "fiftyone"), "app", "launch", name,
                            "--remote", "--port", str(port), "--wait", "-1"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/datasets/{name}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    assert response.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "the FiftyOne App did not serve within 120 s"
                time.sleep(1)
        shot = np.zeros((1, 1, 3))
        for _ in range(8):  # the grid's first draw sometimes outlasts Chromium's budget
            shot = screenshot(url, ARTIFACTS / "app.png", budget_ms=60_000)
            if len(np.unique(shot.reshape(-1, 3), axis=0)) > 10_000:  # the photos are drawn
                break
        return shot
    finally:
        os.killpg(app.pid, signal.SIGKILL)
        app.wait()


@pytest.mark.slow
def test_export_fiftyone_of_a_dir_that_is_no_output_says_so(tmp_path):
    done = run_cli("export", "fiftyone", str(tmp_path), env=_env(tmp_path), timeout=300)
    assert done.returncode == 1
    assert "has no manifest.jsonl: give the output.dir of a run" in done.stderr
    remote = run_cli("export", "fiftyone", "gs://bucket/out", env=_env(tmp_path), timeout=300)
    assert remote.returncode == 1 and "copy the output dir here first" in remote.stderr


def test_memberships_by_hand():
    audit = {"classes": {
        "2": {"clusters": [{"method": "vanilla", "cluster": 0, "members": ["a", "b"]},
                           {"method": "guided", "cluster": 1, "members": ["a"]}],
              "flags": [{"kind": "corner", "method": "vanilla", "members": ["a", "c"],
                         "confirmation": {"confirmed": False}},
                        {"kind": "border", "method": "vanilla", "members": ["a"],
                         "confirmation": {"confirmed": True}}]},
        "5": {"clusters": [], "flags": [{"kind": "repeated_pattern", "method": "guided",
                                         "members": ["d"]}]},
    }}  # fmt: skip
    assert memberships(audit) == {
        ("vanilla", "a"): Membership("2.0", ("corner", "border"), True),
        ("vanilla", "b"): Membership("2.0"),
        ("vanilla", "c"): Membership("-", ("corner",), False),
        ("guided", "a"): Membership("2.1"),
        ("guided", "d"): Membership("-", ("repeated_pattern",), False),
    }
