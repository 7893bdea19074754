"""The report in a real browser: Debian's headless Chromium opens audit/report.html from the
file system; the test fails on any console message, any image that did not load (the page
marks its body data-images-ok), or a blank page, and keeps a screenshot under
test-artifacts/browser/ to look at."""

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.testing.browser import chromium

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"


def open_page(path: Path, screenshot: Path) -> tuple[str, list[str]]:
    """(the DOM after load, the console messages) of a file:// page; a screenshot too."""
    common = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0"]  # fmt: skip
    url = path.resolve().as_uri()
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([*common, f"--screenshot={screenshot}", "--window-size=1280,2400", url],
                   capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    return dom.stdout, console


def check_page(path: Path, screenshot: Path) -> str:
    dom, console = open_page(path, screenshot)
    assert console == [], f"console messages on {path.name}: {console}"
    assert 'data-images-ok="true"' in dom, re.findall(r'<span id="broken">[^<]*', dom)
    with Image.open(screenshot) as shot:
        pixels = np.asarray(shot.convert("RGB"), np.float64)
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # not blank
    return dom


@pytest.mark.slow
def test_the_checker_catches_console_errors_and_broken_images(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><body><p>text</p><img src="missing.png"><script>'
                    "window.addEventListener('load',()=>{document.body.dataset.imagesOk="
                    "[...document.images].every(i=>i.naturalWidth>0)});nope();"
                    "</script></body>")  # fmt: skip
    dom, console = open_page(page, tmp_path / "bad.png")
    assert any("nope is not defined" in line for line in console)
    assert 'data-images-ok="false"' in dom


@pytest.mark.slow
def test_the_report_opens_offline_with_every_image(default_run):
    out = default_run.out
    report = out / "audit" / "report.html"
    text = report.read_text()
    assert "http://" not in text and "https://" not in text  # nothing from the network
    dom = check_page(report, ARTIFACTS / "report.png")
    for section in ("The run", "Methods", "Sanity check", "Classes", "Localisation examples"):
        assert f">{section}" in dom
    assert dom.count("<img") >= 12 * 3  # mean maps, prototypes, example thumbnails
    index = check_page(out / "index.html", ARTIFACTS / "index.png")
    assert index.count("<figure>") == 12 and 'href="audit/report.html"' in index


@pytest.mark.slow
def test_a_flagged_cluster_shows_its_evidence_prototype_and_examples(default_run_copy):
    default_out = default_run_copy  # the report is rewritten: leave the shared run's
    from pipeline.audit.pipeline import write_report
    from pipeline.config.files import load_config

    audit = json.loads((default_out / "audit" / "audit.json").read_text())
    entry = audit["classes"]["0"]
    cluster = next(c for c in entry["clusters"] if c["method"] == "guided")
    entry["flags"] = [{"kind": "corner", "method": "guided", "cluster": cluster["cluster"],
                       "members": cluster["members"],
                       "evidence": {"measured": "mass of the cluster prototype in the top_left "
                                    "corner", "value": 0.31, "threshold": 0.25}}]  # fmt: skip
    config = load_config("configs/local.yaml", [f"output.dir={default_out}"])
    write_report(config, audit)
    dom = check_page(default_out / "audit" / "report.html", ARTIFACTS / "report_flagged.png")
    assert 'class="flag">corner (guided, cluster' in dom and "threshold 0.250" in dom
    flagged = dom[dom.index('id="class-0"') :].split("</details>")[0]
    assert flagged.count("<img") >= 1 + len(cluster["members"])  # prototype + members
