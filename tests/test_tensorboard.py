"""The audits in TensorBoard: ``python -m pipeline tensorboard OUT`` writes one scalar step
per archived audit, the newest audit's maps as images and the Embedding Projector's
strategy embeddings; a real TensorBoard serves them on 127.0.0.1, its data endpoints
return what was written, headless Chromium draws the time-series and projector pages
(screenshots under test-artifacts/tensorboard/); once written, the next audit rewrites it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from pipeline.audit.report.tensorboard import scalars
from pipeline.testing.browser import screenshot
from pipeline.testing.processes import ROOT, run_cli
from pipeline.testing.stores import free_port

ARTIFACTS = ROOT / "test-artifacts" / "tensorboard"


def test_the_scalars_of_one_audit():
    audit = {
        "methods": {"vanilla": {"localisation": {"pointing": 0.75, "n": 4},
                                "faithfulness": None,
                                "sanity": {"statistics": {"ssim": [0.9, 0.4]}}}},
        "classes": {"3": {"count": 4, "accuracy": 0.5, "clusters": [],
                          "flags": [{"kind": "corner", "confirmation": {"confirmed": True}},
                                    {"kind": "border"}],
                          "methods": {"vanilla": {"metrics": {"gini": 0.25}}}}},
    }  # fmt: skip
    assert scalars(audit) == {
        "vanilla/localisation/pointing": 0.75, "vanilla/sanity/ssim": 0.4,
        "class_3/count": 4.0, "class_3/accuracy": 0.5, "class_3/flags": 2.0,
        "class_3/flags_confirmed": 1.0, "class_3/vanilla/gini": 0.25, "flags/total": 2.0,
    }  # fmt: skip


def _get(base: str, path: str) -> bytes:
    with urllib.request.urlopen(base + path, timeout=30) as response:
        return response.read()


def _serve(logdir: Path):
    port = free_port()
    board = Path(sys.executable).parent / "tensorboard"
    proc = subprocess.Popen([str(board), "--logdir", str(logdir), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if json.loads(_get(base, "/data/plugin/scalars/tags")).get("."):
                return proc, base
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    pytest.fail("tensorboard did not serve the logdir within 90 s")


@pytest.mark.slow
def test_tensorboard_shows_a_scheduled_pair_of_audits(default_run_copy):
    out = default_run_copy  # the quick start's run: its audit is archived once
    done = run_cli("tensorboard", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 audit(s)" in done.stdout
    # the next (nightly) audit rewrites the logdir with both audits
    second = run_cli("audit", "--config", "configs/local.yaml", "--set", f"output.dir={out}")
    assert second.returncode == 0, second.stderr[-3000:]
    logdir = out / "tensorboard"
    events = list(logdir.glob("events.out.tfevents.*"))
    assert len(events) == 1  # rewritten whole
    proc, base = _serve(logdir)
    try:
        tags = json.loads(_get(base, "/data/plugin/scalars/tags"))["."]
        assert {"vanilla/localisation/pointing", "class_0/accuracy", "flags/total"} <= set(tags)
        series = json.loads(_get(base, "/data/plugin/scalars/scalars?run=.&tag=class_0/count"))
        assert [step for _, step, _ in series] == [0, 1]  # one step per audit, in time order
        assert series[0][0] <= series[1][0] and series[1][2] == series[0][2] > 0
        images = json.loads(_get(base, "/data/plugin/images/tags"))["."]
        assert "class_0/vanilla/mean_map" in images
        info = json.loads(_get(base, "/data/plugin/projector/info?run=."))
        shown = {e["tensorName"]: e for e in info["embeddings"]}
        assert {"vanilla/all", "guided/all", "smoothgrad/all"} <= set(shown)
        for name, e in shown.items():
            n, d = e["tensorShape"]
            tensor = _get(base, f"/data/plugin/projector/tensor?run=.&name={name}")
            assert len(tensor) == n * d * 4  # float32 points: every member, every coordinate
            meta = _get(base, f"/data/plugin/projector/metadata?run=.&name={name}").decode()
            rows = meta.strip().split("\n")
            assert rows[0].split("\t")[:4] == ["key", "class", "label", "cluster"]
            assert len(rows) == n + 1
        assert shown["vanilla/all"]["tensorShape"][0] == 12  # the bundled job's images
        scalars_page = screenshot(f"{base}/#timeseries", ARTIFACTS / "timeseries.png").astype(
            np.float64
        )
        projector = screenshot(f"{base}/#projector&run=.", ARTIFACTS / "projector.png").astype(
            np.float64
        )
        for shot in (scalars_page, projector):
            assert shot.std() > 10 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 50
    finally:
        proc.kill()
        proc.wait()
