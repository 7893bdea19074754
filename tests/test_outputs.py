"""outputs.py: atomic files (publishing and recovery: test_crash_safety.py)."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.store import files as outputs


def test_write_json_atomic_and_overwrites(tmp_path):
    path = str(tmp_path / "sub" / "summary.json")
    outputs.write_json(path, {"b": 1, "a": [1.5, "é"]})
    outputs.write_json(path, {"b": 2, "a": [1.5, "é"]})
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert json.loads(text) == {"a": [1.5, "é"], "b": 2}
    assert text.index('"a"') < text.index('"b"')  # sorted keys
    assert os.listdir(tmp_path / "sub") == ["summary.json"]  # no temp file left
    with pytest.raises(TypeError):
        outputs.write_json(str(tmp_path / "bad.json"), {"x": object()})
    assert os.listdir(tmp_path) == ["sub"]
