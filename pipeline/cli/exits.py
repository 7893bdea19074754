"""The exit codes, and which exception means which: in one place.

A command raises; ``exit_for`` prints the one line a person reads and returns the code. The
exception classes live in modules that load TensorFlow or Beam; an exception of a class
whose module was never imported cannot have been raised, so each is looked up among the
modules already loaded, and mapping an error never loads TensorFlow.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_TOO_MANY_FAILURES = 3
EXIT_MODEL = 4
EXIT_BUSY = 5
EXIT_DRIFT = 6
EXIT_AUDIT_FAILED = 7

EXIT_CODES = f"""exit codes:
  {EXIT_OK}  ok
  {EXIT_FAILED}  the command failed before it published anything: earlier outputs are intact;
     rerun
  {EXIT_CONFIG}  bad config or environment (flag, runner, output.dir, filesystem extra, model
     file, inputs): nothing ran, nothing was written
  {EXIT_TOO_MANY_FAILURES}  more than run.max_failure_fraction of the inputs failed (the rest is
     published)
  {EXIT_MODEL}  the model could not be loaded: nothing was read
  {EXIT_BUSY}  another run holds output.dir
  {EXIT_DRIFT}  drift: a --fail-on rule broke (attention regressed between the audits)
  {EXIT_AUDIT_FAILED}  the run's records and artifacts are published, then its audit failed:
     python -m pipeline audit --config ... audits them again

Every other flag passes through to Apache Beam (e.g. --runner=DataflowRunner
--project=... --region=..., --direct_num_workers=2); unknown flags are refused."""

_LOG = logging.getLogger("pipeline")


class AuditAfterPublishError(RuntimeError):
    """The run published its outputs, then its chained audit failed (``__cause__``)."""


def first_line(exc: BaseException) -> str:
    """The exception's message, first line, at most 300 characters."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:300]


def errors(lines: Sequence[str]) -> int:
    """Print each problem as an ``error:`` line; EXIT_CONFIG."""
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    return EXIT_CONFIG


# exception -> (module, class): looked up only if the module is loaded (see above)
_CONFIG_ERROR = ("pipeline.config.checks", "ConfigError")
_MODEL_ERROR = ("pipeline.engine.model_geometry", "ModelLoadError")
_BUSY_ERROR = ("pipeline.store.publish", "OutputBusyError")


def _is(exc: BaseException, where: tuple[str, str]) -> bool:
    module = sys.modules.get(where[0])
    cls = getattr(module, where[1], None) if module is not None else None
    return cls is not None and isinstance(exc, cls)


def exit_for(exc: BaseException, *, command: str) -> int:
    """The exit code of a command that raised ``exc``, after the line that explains it."""
    if _is(exc, _CONFIG_ERROR):
        return errors(exc.errors)
    if _is(exc, _MODEL_ERROR):
        _say(f"the model could not be loaded, nothing was read: {exc}")
        return EXIT_MODEL
    if _is(exc, _BUSY_ERROR):
        _say(first_line(exc))
        return EXIT_BUSY
    _LOG.debug("the %s command failed", command, exc_info=True)
    if isinstance(exc, AuditAfterPublishError):
        cause = exc.__cause__ or exc
        if _is(cause, _BUSY_ERROR):
            _say(first_line(cause))
            return EXIT_BUSY
        _say(f"the run is published, then its audit failed ({_named(cause)}); audit it "
             "again with python -m pipeline audit and the same config (-v shows the "
             "traceback)")  # fmt: skip
        return EXIT_AUDIT_FAILED
    what = "the run" if command == "run" else f"the {command}"
    _say(f"{what} failed ({_named(exc)}); nothing of it was published and earlier outputs "
         "are intact: rerun with the same config (-v shows the traceback)")  # fmt: skip
    return EXIT_FAILED


def _named(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}"


def _say(line: str) -> None:
    print(f"error: {line}", file=sys.stderr)
