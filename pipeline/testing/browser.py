"""Headless Chromium for the tests that look at a page: Debian's ``chromium`` (.ci/run
installs it), one screenshot at a time."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image


def chromium() -> str:
    """The Chromium executable on PATH; AssertionError saying how to install it if none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise AssertionError("no chromium on PATH: install Debian's chromium (.ci/run does: "
                             "apt-get install -y chromium)")  # fmt: skip
    return found


def screenshot(url: str, path: Path, *, budget_ms: int = 25_000) -> np.ndarray:
    """RGB uint8 [H, W, 3] of ``url`` drawn at 1400 x 900 (WebGL on SwiftShader) after up
    to ``budget_ms`` of virtual time; also saved to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([chromium(), "--headless=new", "--no-sandbox", "--enable-unsafe-swiftshader",
                    "--use-angle=swiftshader", "--window-size=1400,900",
                    f"--virtual-time-budget={budget_ms}", f"--screenshot={path}", url],
                   capture_output=True, timeout=180, check=True)  # fmt: skip
    with Image.open(path) as shot:
        return np.asarray(shot.convert("RGB"))
