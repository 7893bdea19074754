"""Command line: argument parsing, the environment checks, the exit codes.

    python -m pipeline run --config configs/local.yaml [--set section.key=value ...] [beam flags]
    python -m pipeline run --dry-run ...        # check everything, list inputs, run nothing
    python -m pipeline validate --config configs/local.yaml [--check] [--set ...]

Other flags (``--runner``, ``--direct_num_workers``, Dataflow and Flink flags) pass through to
Beam; an unknown or misspelled one is refused (exit 2) with a did-you-mean.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

import yaml

from pipeline import __version__
from pipeline.console import LEVELS, native_stderr_silenced, setup_logging

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_TOO_MANY_FAILURES = 3
EXIT_MODEL = 4
EXIT_BUSY = 5
EXIT_DRIFT = 6

EXIT_CODES = f"""exit codes:
  {EXIT_OK}  ok
  {EXIT_FAILED}  the run failed: nothing of it was published, earlier outputs are intact; rerun
  {EXIT_CONFIG}  bad config or environment (flag, runner, output.dir, filesystem extra, model
     file, inputs): nothing ran, nothing was written
  {EXIT_TOO_MANY_FAILURES}  more than run.max_failure_fraction of the inputs failed (the rest is
     published)
  {EXIT_MODEL}  the model could not be loaded: nothing was read
  {EXIT_BUSY}  another run holds output.dir
  {EXIT_DRIFT}  drift: a --fail-on rule broke (attention regressed between the audits)

Every other flag passes through to Apache Beam (e.g. --runner=DataflowRunner
--project=... --region=..., --direct_num_workers=2); unknown flags are refused."""

DRY_RUN_INPUTS = 10  # inputs listed by --dry-run / validate --check

_LOG = logging.getLogger("pipeline")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Saliency maps for Keras image classifiers over whole datasets (Beam).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"saliency-pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    drift = sub.add_parser(
        "drift",
        help="what changed between two audits; --fail-on gates it",
        description="Compare audit A (before) with audit B (after): each an audit.json or "
        "an output dir holding audit/audit.json. Rules: METRIC[@METHOD]:CHANGE, e.g. "
        "pointing:-0.05 (absolute) or energy_in_box:-10%% (relative), flags:+0.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    drift.add_argument("before", metavar="AUDIT_A")
    drift.add_argument("after", metavar="AUDIT_B")
    drift.add_argument("--fail-on", dest="rules", action="append", default=[], metavar="RULE")
    drift.add_argument("--json", action="store_true", help="print the whole comparison as JSON")
    drift.add_argument("--top", type=int, default=10, help="classes listed (default 10)")
    for flag in ("--quiet", "--verbose"):
        drift.add_argument(flag, flag[1:3], action="store_true", help=argparse.SUPPRESS)
    drift.add_argument("--log-level", choices=LEVELS, help=argparse.SUPPRESS)
    demo = sub.add_parser(
        "demo",
        help="make shortcut scenes, train a model on them and run the job (offline)",
        description="Make seeded scenes (objects on photo crops; three classes with a "
        "shortcut, two clean), train a small CNN on them, then run configs/demo.yaml on "
        "them: DIR/audit/report.html shows what the audit finds.",
        allow_abbrev=False,
    )
    demo.add_argument("--out", default="out/demo", metavar="DIR", help="default out/demo")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--per-class", type=int, default=200, help="images per class (200)")
    demo.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="SECTION.KEY=VALUE", help="override configs/demo.yaml")  # fmt: skip
    for flag in ("--quiet", "--verbose"):
        demo.add_argument(flag, flag[1:3], action="store_true", help=argparse.SUPPRESS)
    demo.add_argument("--log-level", choices=LEVELS, help=argparse.SUPPRESS)
    for name, help_text in (
        ("run", "run the job (other flags go to Beam, e.g. --runner=DataflowRunner)"),
        ("validate", "check a config and print it resolved (--check: the environment too)"),
        ("audit", "audit the published records of output.dir: audit/audit.json, rows.jsonl"),
    ):
        cmd = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        cmd.add_argument("--config", "-c", help="YAML config file (default: built-in defaults)")
        cmd.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override a config value (YAML syntax), e.g. saliency.methods=[guided]",
        )
        verbosity = cmd.add_mutually_exclusive_group()
        verbosity.add_argument("--quiet", "-q", action="store_true", help="errors only")
        verbosity.add_argument(
            "--verbose", "-v", action="store_true", help="the libraries' INFO lines too"
        )
        verbosity.add_argument("--log-level", choices=LEVELS, help="set the level exactly")
        if name == "audit":
            continue
        if name == "run":
            cmd.add_argument(
                "--dry-run",
                action="store_true",
                help="check the config, the environment and the model, list the inputs, "
                "say what a run would do; run nothing, write nothing",
            )
            cmd.add_argument("--json", action="store_true", help="print the summary as JSON")
        else:
            cmd.add_argument(
                "--check",
                action="store_true",
                help="also check the environment, load the model and list the inputs",
            )
    return parser


def _our_flags(parser: argparse.ArgumentParser) -> list[str]:
    flags = {s for a in parser._actions for s in a.option_strings}
    for action in parser._actions:
        for sub in getattr(action, "choices", None) or {}:
            if isinstance(action.choices, dict):
                flags |= {s for a in action.choices[sub]._actions for s in a.option_strings}
    return sorted(f for f in flags if f.startswith("--"))


def _errors(lines: Sequence[str]) -> int:
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    return EXIT_CONFIG


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m pipeline` and the `saliency-pipeline` script."""
    parser = _parser()
    args, beam_args = parser.parse_known_args(argv)
    setup_logging(quiet=args.quiet, verbose=args.verbose, level=args.log_level)
    if args.command == "drift":
        if beam_args:
            return _errors([f"unknown argument {beam_args[0]} for drift. See drift --help."])
        return _drift(args)
    if args.command == "demo":
        return _demo(args, beam_args)
    # The package's heavy parts load only now, after the logging and TF settings, with
    # TensorFlow's native banners kept off the terminal.
    from pipeline.config.checks import ConfigError
    from pipeline.config.files import load_config

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        return _errors(exc.errors)
    if args.command == "audit":
        with native_stderr_silenced(not args.verbose):
            from pipeline.beam.preflight import flag_problems
        merged = config.beam.flags(beam_args)  # the config's beam: section, then these
        problems = flag_problems(merged, _our_flags(parser), config.beam.names)
        return _errors(problems) if problems else _audit(config, beam_args, to_stdout=True)
    check = getattr(args, "check", False) or getattr(args, "dry_run", False)
    if args.command == "validate" and not check:
        if beam_args:
            return _errors([f"unknown flag {beam_args[0]} for validate. See validate --help."])
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return EXIT_OK
    with native_stderr_silenced(not args.verbose):
        from apache_beam.options.pipeline_options import PipelineOptions

        from pipeline.beam.dataflow import is_dataflow, is_dry_run
        from pipeline.beam.preflight import preflight
        from pipeline.beam.run import run
        from pipeline.engine.model_geometry import ModelLoadError
        from pipeline.store.publish import OutputBusyError
    problems = preflight(config, beam_args, _our_flags(parser))
    if problems:
        return _errors(problems)
    options = PipelineOptions(config.beam.flags(beam_args))
    if is_dataflow(options) and (check or is_dry_run(options)):
        return _dataflow_dry_run(config, beam_args, as_json=getattr(args, "json", False))
    if check:
        return _dry_run(config, beam_args)
    try:
        summary = run(config, beam_args, progress_bar=None if not args.quiet else False)
    except ConfigError as exc:
        return _errors(exc.errors)
    except ModelLoadError as exc:
        print(f"error: the model could not be loaded, nothing was read: {exc}", file=sys.stderr)
        return EXIT_MODEL
    except OutputBusyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except Exception as exc:  # noqa: BLE001 - one clear line; the traceback with -v
        _LOG.debug("the run failed", exc_info=True)
        print(
            f"error: the run failed ({type(exc).__name__}: {_first_line(exc)}); nothing of "
            "it was published and earlier outputs are intact: rerun with the same config "
            "(-v shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if args.json:
        print(json.dumps(summary.__dict__, indent=2, default=list))
    skipped = f", {summary.images_skipped} already done" if summary.incremental else ""
    print(
        f"{summary.images_written} of {summary.inputs} images explained, "
        f"{summary.images_failed} failed (see {summary.output_dir}/failures.jsonl){skipped}, "
        f"{summary.records} records, {summary.elapsed_s:.1f} s, "
        f"{summary.images_per_s:.2f} images/s -> {summary.output_dir}"
    )
    if config.audit.enabled:
        code = _audit(config, beam_args, to_stdout=False)
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


def _demo(args: argparse.Namespace, beam_args: Sequence[str]) -> int:
    """Make the demo's data and model (pipeline.demo.command), then run its config."""
    with native_stderr_silenced(not args.verbose):
        from pipeline.demo.command import DEMO_CONFIG, prepare
    try:
        print(f"demo: making scenes and training the model under {args.out}/data ...")
        overrides = prepare(args.out, seed=args.seed, per_class=args.per_class)
    except ValueError as exc:
        return _errors([str(exc)])
    sets = [item for o in [*overrides, *args.overrides] for item in ("--set", o)]
    quiet = ["--quiet"] if args.quiet else []
    return main(["run", "--config", str(DEMO_CONFIG), *sets, *quiet, *beam_args])


def _audit(config, beam_args: Sequence[str], *, to_stdout: bool) -> int:
    """Audit output.dir's published records; one summary line (a log line after a run,
    whose own summary is the one line on stdout)."""
    with native_stderr_silenced():
        from pipeline.audit.pipeline import run_audit
        from pipeline.store.publish import OutputBusyError
    try:
        result = run_audit(config, beam_args)
    except OutputBusyError as exc:
        print(f"error: {_first_line(exc)}", file=sys.stderr)
        return EXIT_BUSY
    except (OSError, ValueError) as exc:
        print(f"error: the audit failed: {_first_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    audit = result.audit
    flags = sum(len(c["flags"]) for c in audit["classes"].values())
    out = config.output.dir.rstrip("/")
    line = (
        f"audit: {audit['records']} records, {len(audit['classes'])} classes, {flags} flags "
        f"-> {out}/audit/audit.json, {out}/audit/report.html"
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


def _drift(args) -> int:
    """Compare two audits; print what changed; exit EXIT_DRIFT when a rule broke."""
    from pipeline.audit.report.drift import check_rules, compare, parse_rule, summary_lines
    from pipeline.store.files import read_json
    from pipeline.store.layout import AUDIT_JSON, join_path

    try:
        rules = [parse_rule(text) for text in args.rules]
    except ValueError as exc:
        return _errors([str(exc)])
    audits = []
    for path in (args.before, args.after):
        target = path if path.endswith(".json") else join_path(path.rstrip("/"), AUDIT_JSON)
        try:
            audits.append(read_json(target))
        except (OSError, ValueError) as exc:
            return _errors([f"cannot read the audit {target}: {_first_line(exc)}. Give an "
                            "audit.json or an output dir that has audit/audit.json."])  # fmt: skip
    drift = compare(*audits)
    broken = check_rules(drift, rules)
    if args.json:
        print(json.dumps({**drift, "broken": broken}, indent=2))
    else:
        print("\n".join(summary_lines(drift, top=args.top)))
    for line in broken:
        print(f"drift: broken rule {line}", file=sys.stderr)
    return EXIT_DRIFT if broken else EXIT_OK


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:300]


def _dry_run(config, beam_args: Sequence[str]) -> int:
    """Load the model, list the first inputs, say what a run would do; write nothing."""
    from pipeline.beam.run import input_total
    from pipeline.engine.model_geometry import ModelLoadError, model_geometry
    from pipeline.store.class_names import configured_class_names
    from pipeline.store.listing import list_pattern, normalise_pattern, split_patterns

    try:
        names = configured_class_names(config.model.class_names)
        geometry = model_geometry(config.model, class_names=names)
    except ModelLoadError as exc:
        print(f"error: the model could not be loaded: {exc}", file=sys.stderr)
        return EXIT_MODEL
    src, s = config.source, config.saliency
    total = input_total(config)
    print(f"model: {geometry.name} (input {geometry.input_size[0]}x{geometry.input_size[1]}x"
          f"{geometry.channels}, fingerprint {geometry.fingerprint[:12]})")  # fmt: skip
    print(f"inputs: {src.kind} {src.pattern or src.tfds_name}: "
          f"{'?' if total is None else total} images")  # fmt: skip
    if src.kind == "files":
        shown = 0
        for pattern in split_patterns(src.pattern):
            for _, key in list_pattern(normalise_pattern(pattern)):
                if shown == DRY_RUN_INPUTS:
                    break
                print(f"  {key}")
                shown += 1
        if total is not None and total > shown:
            print(f"  ... and {total - shown} more")
    print(
        f"would compute: {', '.join(s.methods)} for the {s.target} class (SmoothGrad N="
        f"{s.samples}, noise {s.noise}; precision {s.precision}), batches of "
        f"{config.batch.max_batch_size}"
    )
    views = ", ".join(config.output.views) if config.output.artifacts else "no artifacts"
    print(
        f"would write: {config.output.dir} (records: {config.output.records}; {views}; "
        f"incremental: {config.run.incremental}); runner: "
        f"{_runner(config.beam.flags(beam_args))}. Nothing was run or written."
    )
    return EXIT_OK


def _dataflow_dry_run(config, beam_args: Sequence[str], *, as_json: bool) -> int:
    """Build the Dataflow job offline and say what it would start; submit nothing."""
    from pipeline.beam.dataflow import describe
    from pipeline.config.checks import ConfigError

    try:
        job = describe(config, beam_args)
    except ConfigError as exc:
        return _errors(exc.errors)
    if as_json:
        print(json.dumps(job, indent=2))
        return EXIT_OK
    print(f"Dataflow job built, not submitted: {job['transforms']} transforms "
          f"({', '.join(job['top_level_transforms'])})")  # fmt: skip
    print(f"workers: up to {job['max_num_workers']} x {job['machine_type']}, "
          f"{', '.join(job['service_options']) or 'no service options'}, "
          f"one SDK process per VM: {job['one_sdk_process_per_vm']}")  # fmt: skip
    print(f"image: {', '.join(job['container_images'])}")
    print(f"project {job['project']}, region {job['region']}. Nothing was staged or run.")
    return EXIT_OK


def _runner(beam_args: Sequence[str]) -> str:
    for i, arg in enumerate(beam_args):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1]
        if arg == "--runner" and i + 1 < len(beam_args):
            return beam_args[i + 1]
    return "DirectRunner (in-process)"


if __name__ == "__main__":
    sys.exit(main())
