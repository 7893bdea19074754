"""The house rules: nine rooms and the audit's stages, imports that run one way, small
modules, no late imports."""

import ast
import subprocess
from pathlib import Path

import keras
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
SHARED = {"choices", "elements", "config", "runners"}  # bottom modules any room may import
# room -> the package modules / rooms it may import (besides itself and SHARED)
ALLOWED = {
    "config": set(),
    "engine": set(),
    "maps": set(),
    "store": {"maps"},
    "audit": {"engine", "maps", "store"},
    "beam": {"engine", "maps", "store", "audit"},
    "demo": {"engine", "maps", "store", "audit"},  # shortcut scenes, the suite, the demo
    # helpers of tests/ and benchmarks/; no room imports it
    "testing": {"engine", "maps", "store", "audit", "beam", "cli", "demo"},
}
# the audit's stages -> the stages each may import; the modules directly in audit/ (the
# Beam wiring) may import them all
AUDIT_STAGES = {
    "metrics": set(),
    "record": {"metrics"},
    "dataset": {"metrics", "record"},
    "causal": {"metrics", "record", "dataset"},
    "report": {"metrics", "record", "dataset"},  # what people read of the earlier stages
}
NO_MODEL = ("metrics", "record", "dataset", "report")  # stages that never load TF / Keras
MAX_LINES = 420  # "no module over ~400 lines"
# the audit's Beam wiring: its pipeline, and where its row lines are read from
AUDIT_BEAM = ("pipeline.audit.pipeline", "pipeline.audit.sources", "pipeline.audit.job_stage")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else parts[-1]


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node, [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            yield node, [a.name for a in node.names]


def test_the_tree_shows_the_rooms_and_the_audits_stages():
    rooms = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert rooms == {"cli", "config", "engine", "maps", "store", "beam", "audit", "demo", "testing"}
    audit = PACKAGE / "audit"
    assert {p.name for p in audit.iterdir() if (p / "__init__.py").exists()} == set(AUDIT_STAGES)
    # the Beam wiring alone sits at the audit's top
    assert {p.stem for p in audit.glob("*.py")} == {"__init__", "pipeline", "sources", "job_stage"}
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == [
        "__init__.py", "__main__.py", "choices.py", "console.py", "elements.py", "runners.py",
        "versions.py",
    ]  # fmt: skip
    assert (PACKAGE / "engine" / "methods" / "gradient.py").exists()


def test_imports_run_one_way_and_engine_maps_never_import_beam():
    broken = []
    for path, module in _modules():
        room = _room(module)
        tree = ast.parse(path.read_text())
        for node, names in _imports(tree):
            for name in names[:1]:
                if name.startswith("apache_beam") and room in ("engine", "maps"):
                    broken.append(f"{module}:{node.lineno} imports {name}")
                if room == "audit" and name.startswith("apache_beam") and module not in AUDIT_BEAM:
                    broken.append(f"{module}:{node.lineno} imports {name}")
            for name in names:
                parts = name.split(".")
                if parts[0] != "pipeline" or len(parts) < 2:
                    continue
                target = parts[1]
                if target in SHARED or target == room or room not in ALLOWED:
                    continue
                if target in ALLOWED and target not in ALLOWED[room]:
                    broken.append(f"{module}:{node.lineno} ({room}) imports {name}")
    assert broken == []


def test_the_audits_stages_import_one_way():
    broken = []
    for path, module in _modules():
        parts = module.split(".")
        if parts[1] != "audit" or len(parts) < 4:
            continue
        stage = parts[2]
        for node, names in _imports(ast.parse(path.read_text())):
            name = names[0]
            if stage in NO_MODEL and name.split(".")[0] in ("tensorflow", "keras"):
                broken.append(f"{module}:{node.lineno} ({stage}) imports {name}")
            for name in names:
                target = name.split(".")
                if target[:2] != ["pipeline", "audit"] or len(target) < 3:
                    continue
                if target[2] != stage and target[2] not in AUDIT_STAGES[stage]:
                    broken.append(f"{module}:{node.lineno} ({stage}) imports {name}")
    assert broken == []


def test_no_module_is_over_about_400_lines():
    benchmarks = sorted((PACKAGE.parent / "benchmarks").glob("*.py"))
    paths = [p for p, _ in _modules()] + benchmarks
    long = {str(p): n for p in paths if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
    assert len(benchmarks) > 10


def test_benchmarks_are_a_package_that_edits_no_path_and_reads_nothing_of_tests():
    # run as python -m benchmarks.<name>; shared helpers come from pipeline.testing
    for path in sorted((PACKAGE.parent / "benchmarks").glob("*.py")):
        text = path.read_text()
        assert "sys.path" not in text, path.name
        for _node, names in _imports(ast.parse(text)):
            top = names[0].split(".")[0]
            assert not top.startswith(("test_", "_", "conftest")) or top == "__future__", (
                path.name, names[0])  # fmt: skip
    assert (PACKAGE.parent / "benchmarks" / "__init__.py").exists()


def test_tests_share_one_subprocess_helper():
    # pipeline.testing.processes runs `python -m pipeline`; no test module spells it again
    spelled = []
    for path in sorted((PACKAGE.parent / "tests").glob("*.py")):
        text = path.read_text()
        if path.name != "test_house.py" and '"-m", "pipeline"' in text:
            spelled.append(path.name)
    assert spelled == []


def test_package_imports_sit_at_the_top_of_modules():
    # cli is the one exception: TF_CPP_MIN_LOG_LEVEL must be set before TF loads.
    late = []
    for path, module in _modules():
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        for node, names in _imports(tree):
            late_ok = module.startswith("pipeline.cli")
            if id(node) not in top and names[0].startswith("pipeline") and not late_ok:
                late.append(f"{module}:{node.lineno}")
    assert late == []


def test_every_output_dir_name_is_declared_in_the_layout_module():
    names = ('"manifest.jsonl"', '"failures.jsonl"', '"summary.json"', '"counts.json"',
             '"done.txt"', '".staging"', '".lock"')  # fmt: skip
    spelled = {
        module: [n for n in names if n in path.read_text()]
        for path, module in _modules()
        if module != "pipeline.store.layout"
    }
    assert {m: n for m, n in spelled.items() if n} == {}


def test_the_fast_lane_refuses_processes_and_training():
    """conftest.py's guard: outside @pytest.mark.slow a process or a fit() fails the test."""
    with pytest.raises(AssertionError, match="mark it @pytest.mark.slow"):
        subprocess.run(["true"], check=True)
    with pytest.raises(AssertionError, match="mark it @pytest.mark.slow"):
        keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]).fit([[0.0]], [[0.0]])
