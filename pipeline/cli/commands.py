"""The commands, one small function each: ``Call`` in, an exit code out.

A command raises what goes wrong; cli.exits maps the exception to its line and code. The
package's heavy parts load inside the commands, after the logging and TF settings, with
TensorFlow's native banners kept off the terminal (cli is the package's one late importer).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence

import yaml

from pipeline.cli.exits import (
    EXIT_DRIFT,
    EXIT_OK,
    EXIT_TOO_MANY_FAILURES,
    AuditAfterPublishError,
    errors,
    first_line,
)
from pipeline.console import native_stderr_silenced

_LOG = logging.getLogger("pipeline")


@dataclasses.dataclass(frozen=True)
class Call:
    """One invocation: the parsed arguments, the flags left for Beam, the flags we own."""

    args: argparse.Namespace
    beam_args: tuple[str, ...]
    own_flags: tuple[str, ...]


def _config(call: Call):
    from pipeline.config.files import load_config

    return load_config(call.args.config, call.args.overrides)


def validate(call: Call) -> int:
    """Print the config resolved; with --check, what `run --dry-run` checks too."""
    if call.args.check:
        return _checked(call, _config(call), check=True)
    config = _config(call)
    if call.beam_args:
        return errors([f"unknown flag {call.beam_args[0]} for validate. See validate --help."])
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    return EXIT_OK


def run(call: Call) -> int:
    """Run the job (or, with --dry-run, say what it would do), then its audit if on."""
    return _checked(call, _config(call), check=call.args.dry_run)


def _checked(call: Call, config, *, check: bool) -> int:
    with native_stderr_silenced(not call.args.verbose):
        from apache_beam.options.pipeline_options import PipelineOptions

        from pipeline.beam.dataflow import is_dataflow, is_dry_run
        from pipeline.beam.preflight import preflight
        from pipeline.cli.dry_run import dataflow_dry_run, dry_run
    problems = preflight(config, list(call.beam_args), list(call.own_flags))
    if problems:
        return errors(problems)
    options = PipelineOptions(config.beam.flags(list(call.beam_args)))
    if is_dataflow(options) and (check or is_dry_run(options)):
        return dataflow_dry_run(config, call.beam_args, as_json=getattr(call.args, "json", False))
    if check:
        return dry_run(config, call.beam_args)
    return _run(call, config)


def _run(call: Call, config) -> int:
    from pipeline.beam.run import run as run_job

    bar = None if not call.args.quiet else False
    summary = run_job(config, list(call.beam_args), progress_bar=bar)
    if call.args.json:
        print(json.dumps(summary.__dict__, indent=2, default=list))
    skipped = f", {summary.images_skipped} already done" if summary.incremental else ""
    print(
        f"{summary.images_written} of {summary.inputs} images explained, "
        f"{summary.images_failed} failed (see {summary.output_dir}/failures.jsonl){skipped}, "
        f"{summary.records} records, {summary.elapsed_s:.1f} s, "
        f"{summary.images_per_s:.2f} images/s -> {summary.output_dir}"
    )
    if config.audit.enabled:
        try:
            code = _audit(config, call.beam_args, to_stdout=False)
        except Exception as exc:  # noqa: BLE001 - the records are published: say so (exits)
            raise AuditAfterPublishError(str(exc)) from exc
        if code != EXIT_OK:
            return code
    if summary.too_many_failures:
        print(
            f"error: {summary.failure_fraction:.1%} of inputs failed, above "
            f"run.max_failure_fraction={summary.max_failure_fraction}; everything written so "
            f"far is kept. See {summary.output_dir}/failures.jsonl",
            file=sys.stderr,
        )
        return EXIT_TOO_MANY_FAILURES
    return EXIT_OK


def audit(call: Call) -> int:
    """Audit output.dir's published records."""
    config = _config(call)
    with native_stderr_silenced(not call.args.verbose):
        from pipeline.beam.preflight import flag_problems
    merged = config.beam.flags(list(call.beam_args))  # the config's beam: section, then these
    problems = flag_problems(merged, list(call.own_flags), config.beam.names)
    return errors(problems) if problems else _audit(config, call.beam_args, to_stdout=True)


def _audit(config, beam_args: Sequence[str], *, to_stdout: bool) -> int:
    """One summary line (a log line after a run, whose own summary is the line on stdout)."""
    with native_stderr_silenced():
        from pipeline.audit.pipeline import run_audit
    result = run_audit(config, list(beam_args))
    audit_json = result.audit
    flags = sum(len(c["flags"]) for c in audit_json["classes"].values())
    out = config.output.dir.rstrip("/")
    line = (
        f"audit: {audit_json['records']} records, {len(audit_json['classes'])} classes, "
        f"{flags} flags -> {out}/audit/audit.json, {out}/audit/report.html"
    )
    if result.drift is not None:
        line += f"; compared with audits/{result.drift['previous']}"
    if to_stdout:
        print(line)
    else:
        _LOG.info("%s", line)
    for broken in result.broken:
        print(f"drift: broken rule {broken}", file=sys.stderr)
    return EXIT_DRIFT if result.broken else EXIT_OK


def drift(call: Call) -> int:
    """Compare two audits; print what changed; EXIT_DRIFT when a --fail-on rule broke."""
    from pipeline.audit.report.drift import check_rules, compare, parse_rule, summary_lines
    from pipeline.store.files import read_json
    from pipeline.store.layout import AUDIT_JSON, join_path

    args = call.args
    if call.beam_args:
        return errors([f"unknown argument {call.beam_args[0]} for drift. See drift --help."])
    try:
        rules = [parse_rule(text) for text in args.rules]
    except ValueError as exc:
        return errors([str(exc)])
    audits = []
    for path in (args.before, args.after):
        target = path if path.endswith(".json") else join_path(path.rstrip("/"), AUDIT_JSON)
        try:
            audits.append(read_json(target))
        except (OSError, ValueError) as exc:
            return errors([f"cannot read the audit {target}: {first_line(exc)}. Give an "
                           "audit.json or an output dir that has audit/audit.json."])  # fmt: skip
    found = compare(*audits)
    broken = check_rules(found, rules)
    if args.json:
        print(json.dumps({**found, "broken": broken}, indent=2))
    else:
        print("\n".join(summary_lines(found, top=args.top)))
    for line in broken:
        print(f"drift: broken rule {line}", file=sys.stderr)
    return EXIT_DRIFT if broken else EXIT_OK


def demo(call: Call) -> int:
    """Make the demo's data and model (pipeline.demo.command), then run its config."""
    from pipeline.cli import main

    args = call.args
    with native_stderr_silenced(not args.verbose):
        from pipeline.demo.command import DEMO_CONFIG, prepare
    try:
        print(f"demo: making scenes and training the model under {args.out}/data ...")
        overrides = prepare(args.out, seed=args.seed, per_class=args.per_class)
    except ValueError as exc:
        return errors([str(exc)])
    sets = [item for o in [*overrides, *args.overrides] for item in ("--set", o)]
    quiet = ["--quiet"] if args.quiet else []
    return main(["run", "--config", str(DEMO_CONFIG), *sets, *quiet, *call.beam_args])


def tensorboard(call: Call) -> int:
    """Write OUT/tensorboard/ from OUT's archived audits."""
    if call.beam_args:
        return errors([f"unknown argument {call.beam_args[0]} for tensorboard."])
    from pipeline.audit.report.tensorboard import export_tensorboard, tensorboard_missing

    missing = tensorboard_missing()
    if missing:
        return errors([missing])
    done = export_tensorboard(call.args.output)
    points = sum(done.embeddings.values())
    print(f"tensorboard: {done.steps} audit(s) as {done.scalars} scalars a step, "
          f"{done.images} images, {len(done.embeddings)} embeddings ({points} points) -> "
          f"{done.logdir}; show them with: tensorboard --logdir {done.logdir}")  # fmt: skip
    return EXIT_OK


def export(call: Call) -> int:
    """Export OUT to another tool (today: a FiftyOne dataset)."""
    if call.beam_args:
        return errors([f"unknown argument {call.beam_args[0]} for export."])
    config = _config(call)
    from pipeline.audit.record.rows import load_annotations
    from pipeline.audit.report.fiftyone import export_fiftyone, fiftyone_missing

    # the extra's MongoDB is the oldest FiftyOne supports: said once in the docs, not per run
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    missing = fiftyone_missing()
    if missing:
        return errors([missing])
    with native_stderr_silenced():  # the records' reader loads TensorFlow
        from pipeline.store import records
    out = call.args.output
    done = export_fiftyone(out, records.read, name=call.args.name,
                           annotations=load_annotations(config.audit.annotations),
                           resize_policy=config.source.resize)  # fmt: skip
    audit = "with the audit's metrics, clusters and flags" if done.audited else "no audit yet"
    print(f"fiftyone: dataset {done.name!r}: {done.samples} samples, methods "
          f"{', '.join(done.methods) or '-'} ({audit}); media in {done.media_dir}; open it "
          f"with: fiftyone app launch {done.name}")  # fmt: skip
    if not call.args.config and done.audited and not done.boxed:
        print("fiftyone: no boxes found in the records; with the run's --config, its "
              "audit.annotations boxes are exported too")  # fmt: skip
    return EXIT_OK


# command name -> its function (parser.build_parser declares the same names)
COMMANDS = {
    "run": run,
    "validate": validate,
    "audit": audit,
    "drift": drift,
    "demo": demo,
    "tensorboard": tensorboard,
    "export": export,
}
