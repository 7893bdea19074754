"""Dependencies stated once: every third-party module the package imports is declared in
setup.py, every declared requirement has its tested version in constraints.txt, CI, the
Dockerfile and the README install with those constraints, and tensorflow-datasets is an
extra whose absence is one clear line and exit 2."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.beam import preflight
from pipeline.config.files import load_config

ROOT = Path(__file__).resolve().parent.parent


def _setup_requirements() -> dict[str, list[str]]:
    """install_requires and extras_require as setup.py states them (no install needed)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    names = {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        and isinstance(node.targets[0], ast.Name)
    }  # fmt: skip

    def text(node) -> str:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return names[node.id]
        return "apache-beam"  # the f-string pins of apache-beam[...]=={BEAM}

    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    call = next(n for n in calls if getattr(n.func, "id", "") == "setup")
    kw = {k.arg: k.value for k in call.keywords}
    out = {"install": [text(e) for e in kw["install_requires"].elts]}
    for key, value in zip(kw["extras_require"].keys, kw["extras_require"].values):
        out[key.value] = [text(e) for e in value.elts]
    return out


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_every_requirement_has_its_tested_version_pinned():
    reqs = _setup_requirements()
    pins = _constraints()
    wanted = {_name(r) for key in ("install", "cpu", "tfds", "tensorboard", "test")
              for r in reqs[key]}  # fmt: skip
    assert wanted - set(pins) == set()
    # and the pins are what this environment (CI's) runs
    for name in ("tensorflow-cpu", "keras", "apache-beam", "numpy", "ruff", "jinja2", "tqdm"):
        assert importlib.metadata.version(name) == pins[name], name


def test_every_imported_third_party_module_is_declared():
    reqs = _setup_requirements()
    extras = ("install", "cpu", "tfds", "gcp", "aws", "tensorboard", "fiftyone")
    declared = {_name(r) for key in extras for r in reqs[key]}
    declared |= {"tensorflow", "tensorflow-cpu"}  # the cpu / gpu extras: one of them
    # the gcp / aws extras are Beam's: its clients (boto3, google-cloud-storage) come with it
    for requirement in importlib.metadata.requires("apache-beam"):
        if re.search(r"extra == \"(gcp|aws)\"", requirement):
            declared.add(_name(requirement))
    distributions = importlib.metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    missing = {}
    for path in (ROOT / "pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = []
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            for module in modules:
                top = module.split(".")[0]
                if top in stdlib or top == "pipeline":
                    continue
                dists = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
                if not dists & declared:
                    missing[top] = str(path.relative_to(ROOT))
    assert missing == {}


def test_ci_dockerfile_and_readme_install_with_the_constraints():
    assert 'pip install -q -c constraints.txt -e ".[test]"' in (ROOT / ".ci/run").read_text()
    assert 'pip install -c constraints.txt ".[gpu,gcp,aws]"' in (ROOT / "Dockerfile").read_text()
    assert '-c constraints.txt -e ".[test]"' in (ROOT / "README.md").read_text()


def test_ruff_is_pinned_exactly():
    assert [r for r in _setup_requirements()["test"] if _name(r) == "ruff"] == [
        f"ruff=={_constraints()['ruff']}"
    ]


@pytest.mark.slow
def test_tfds_is_only_imported_by_jobs_that_read_tfds():
    code = (
        "import sys, pipeline.beam.run, pipeline.beam.sources, pipeline.cli\n"
        "print('tensorflow_datasets' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.stdout.strip() == "False", proc.stderr[-2000:]


def test_tfds_source_without_tensorflow_datasets_is_one_line_and_exit_2(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    config = load_config(None, ["source.kind=tfds", "source.tfds_name=mnist"])
    assert preflight.input_problems(config) == [preflight.TFDS_MISSING]
    path = tmp_path / "tfds.yaml"
    path.write_text(yaml.safe_dump({"source": {"kind": "tfds", "tfds_name": "mnist"},
                                    "output": {"dir": str(tmp_path / "out")}}))  # fmt: skip
    assert cli.main(["run", "--config", str(path), "-q"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'saliency-pipeline[tfds]'" in err
    assert not (tmp_path / "out").exists()  # nothing written
