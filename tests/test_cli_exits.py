"""The exit codes come from one table of exception types (cli.exits), and a run whose
records are published but whose audit fails says so with its own code."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.audit import pipeline as audit_pipeline
from pipeline.cli.exits import AuditAfterPublishError, exit_for
from pipeline.config.checks import ConfigError
from pipeline.engine.model_geometry import ModelLoadError
from pipeline.store.publish import OutputBusyError

ROOT = Path(__file__).resolve().parents[1]


def _mapped(exc: BaseException, command: str = "run") -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = exit_for(exc, command=command)
    return code, err.getvalue()


def _after_publish(cause: BaseException) -> AuditAfterPublishError:
    try:
        raise AuditAfterPublishError(str(cause)) from cause
    except AuditAfterPublishError as exc:
        return exc


def test_each_exception_type_has_its_code_and_line():
    assert _mapped(ConfigError("model.name: got 'x'; fix it")) == (
        cli.EXIT_CONFIG, "error: model.name: got 'x'; fix it\n")  # fmt: skip
    code, line = _mapped(ModelLoadError("bad file"))
    assert code == cli.EXIT_MODEL == 4 and "could not be loaded, nothing was read" in line
    assert _mapped(OutputBusyError("out is held by run r1"))[0] == cli.EXIT_BUSY == 5
    # anything else is a failed command: nothing of it was published
    code, line = _mapped(KeyError("class"), command="audit")
    assert code == cli.EXIT_FAILED == 1
    assert "the audit failed (KeyError" in line and "nothing of it was published" in line
    # the audit after a published run: its own code, and the line says what is kept
    code, line = _mapped(_after_publish(KeyError("class")))
    assert code == cli.EXIT_AUDIT_FAILED == 7
    assert "the run is published, then its audit failed (KeyError" in line
    assert "python -m pipeline audit" in line
    # another audit holding the dir after the run published: busy, as before
    assert _mapped(_after_publish(OutputBusyError("held")))[0] == cli.EXIT_BUSY


def test_the_codes_are_documented_where_users_read_them():
    readme = (ROOT / "README.md").read_text()
    for code in range(8):
        assert f"| {code} |" in readme
    assert "7  the run's records and artifacts are published, then its audit failed" in (
        cli.exits.EXIT_CODES)  # fmt: skip


@pytest.mark.slow
def test_a_published_run_whose_audit_fails_exits_7_and_keeps_its_records(tmp_path, monkeypatch):
    def broken_audit(config, beam_args=()):
        raise KeyError("a class the audit did not expect")

    monkeypatch.setattr(audit_pipeline, "run_audit", broken_audit)
    out = tmp_path / "out"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["run", "--config", str(ROOT / "configs/local.yaml"),
                         "--set", f"output.dir={out}", "--set", "saliency.methods=[vanilla]",
                         "-q"])  # fmt: skip
    assert code == cli.EXIT_AUDIT_FAILED, err.getvalue()
    assert "the run is published, then its audit failed (KeyError" in err.getvalue()
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 12  # the bundled job's twelve images, published
