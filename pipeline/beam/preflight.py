"""Every bad environment, found before the model loads: one line each (the CLI exits 2).

Checked in this order, none of them touching output.dir: command-line flags (ours and
every Beam option, with a did-you-mean), the runner (unknown, missing extra, or refused
because it corrupts results), each path's filesystem (a scheme whose extra is not
installed), output.dir (not a directory, not writable), the model file (missing, corrupt,
custom objects needed) and the inputs (a pattern that matches nothing).
"""

import argparse
import contextlib
import difflib
import importlib
import os
import tempfile
from collections.abc import Collection, Sequence

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    StandardOptions,
    _BeamArgumentParser,
)

from pipeline.beam.dataflow import dataflow_problems, is_dataflow, is_dry_run
from pipeline.config import Config
from pipeline.engine.model_files import method_problem, model_file_problem
from pipeline.store.decode import IMAGE_EXTENSIONS
from pipeline.store.listing import (
    check_files_exist,
    check_pattern_matches,
    class_folders,
    normalise_pattern,
    source_root,
    split_patterns,
)
from pipeline.store.object_stores import configure

with contextlib.suppress(ImportError):  # runner options that live beside their runners
    importlib.import_module("apache_beam.runners.portability.flink_runner")
    importlib.import_module("apache_beam.runners.portability.spark_runner")

# scheme -> (the client library its Beam filesystem needs, what installs it). Beam registers
# every filesystem class whether or not its library is there, so the library is checked.
FILESYSTEM_PACKAGES = {
    "gs": ("google.cloud.storage", "saliency-pipeline[gcp]"),
    "s3": ("boto3", "saliency-pipeline[aws]"),
    "azfs": ("azure.storage.blob", "apache-beam[azure]"),
    "hdfs": ("hdfs", "apache-beam[hadoop]"),
}
_RUNNER_EXTRAS = {"dataflow": "gcp", "interactive": "interactive"}
REFUSED_RUNNERS = {
    "daskrunner": (
        "Beam 2.77's DaskRunner computes only the last leaf of the graph, sends every "
        "tagged output to every tag and drops what DoFns emit in finish_bundle, so it "
        "silently loses and duplicates results. Use DirectRunner locally "
        "(--direct_num_workers=N --direct_running_mode=multi_processing), or "
        "PortableRunner / FlinkRunner / DataflowRunner on a cluster"
    ),
}


def _option_parser() -> argparse.ArgumentParser:
    parser = _BeamArgumentParser(allow_abbrev=False)
    seen: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        with contextlib.suppress(argparse.ArgumentError):
            cls._add_argparse_args(parser)
    return parser


def flag_problems(
    beam_args: Sequence[str], our_flags: Sequence[str], from_config: Collection[str] = ()
) -> list[str]:
    """Flags that neither we nor any Beam option know, each with a did-you-mean;
    ``from_config``: the names that came from the config's beam: section."""
    parser = _option_parser()
    _, unknown = parser.parse_known_args(list(beam_args))
    known = sorted({s for a in parser._actions for s in a.option_strings} | set(our_flags))
    problems = []
    for arg in unknown:
        if not arg.startswith("-"):
            if not problems:  # a value left by an unknown flag is reported with that flag
                problems.append(f"unexpected argument {arg!r}. Fix: remove it.")
            continue
        flag = arg.split("=", 1)[0]
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
        if flag.removeprefix("--") in from_config:  # spelled in the config's beam: section
            hint = f" Did you mean beam.{close[0][2:]}?" if close else ""
            problems.append(f"config key 'beam.{flag[2:]}': not a Beam option.{hint}")
            continue
        hint = f" Did you mean {close[0]}?" if close else " See run --help and Beam's options."
        problems.append(f"unknown flag {flag}.{hint}")
    return problems


def runner_problem(runner: str | None) -> str | None:
    """What is wrong with ``--runner``, or None."""
    if runner is None:
        return None
    short = runner.rsplit(".", 1)[-1].lower()
    for name, reason in REFUSED_RUNNERS.items():
        if short in (name, name.removesuffix("runner")):
            return f"--runner={runner} is refused: {reason}."
    known = {p.rsplit(".", 1)[-1].lower(): p for p in StandardOptions.ALL_KNOWN_RUNNERS}
    path = known.get(runner.lower()) or known.get(runner.lower() + "runner") or runner
    if "." not in path:
        names = StandardOptions.KNOWN_RUNNER_NAMES
        close = difflib.get_close_matches(runner, names, n=1, cutoff=0.8)
        hint = f"Did you mean {close[0]}?" if close else f"Known: {', '.join(names)}."
        return f"--runner={runner} is not a Beam runner. {hint}"
    module, _, cls = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), cls, None)
    except ImportError as exc:
        extra = next((e for k, e in _RUNNER_EXTRAS.items() if k in path.lower()), None)
        fix = f"pip install 'saliency-pipeline[{extra}]'" if extra else "install its package"
        return f"--runner={runner} is not available here ({exc}). Fix: {fix}."
    if found is None:
        return f"--runner={runner}: module {module!r} has no {cls!r}."
    return None


def filesystem_problem(path: str, field: str) -> str | None:
    """A scheme (gs://, s3://, ...) whose Beam filesystem is not installed, or None."""
    scheme = FileSystems.get_scheme(path)
    if scheme is None:
        return None
    module, package = FILESYSTEM_PACKAGES.get(scheme, (None, None))
    try:
        FileSystems.get_filesystem(path)
        if module:
            importlib.import_module(module)
    except (ValueError, ImportError, BeamIOError):
        fix = f"pip install '{package}'" if package else "install the Beam filesystem for it"
        return f"{field} {path!r}: no filesystem for {scheme}:// is installed. Fix: {fix}."
    return None


def output_dir_problem(path: str) -> str | None:
    """A local output.dir that is a file, sits under a file, or cannot be written; or None.
    Probes with a temporary entry that is removed again: nothing is left behind."""
    if FileSystems.get_scheme(path) is not None:
        return filesystem_problem(path, "output.dir")
    target = os.path.abspath(path)
    if os.path.exists(target) and not os.path.isdir(target):
        return f"output.dir {path!r} is a file, not a directory. Fix: choose a directory."
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return (
            f"output.dir {path!r} cannot be created: {existing!r} is a file. "
            "Fix: choose a directory."
        )
    try:
        probe = tempfile.mkdtemp(prefix=".write-check-", dir=existing)
        os.rmdir(probe)
    except OSError as exc:
        return (
            f"output.dir {path!r} is not writable ({exc.strerror} in {existing!r}). Fix: "
            "choose a directory you can write, e.g. --set output.dir=out/local."
        )
    return None


TFDS_MISSING = (
    "source.kind: 'tfds' needs tensorflow-datasets, which is not installed: "
    "pip install 'saliency-pipeline[tfds]' (or pip install tensorflow-datasets)"
)


def _has_tfds() -> bool:
    try:
        import tensorflow_datasets  # noqa: F401 - the [tfds] extra
    except ImportError:
        return False
    return True


def input_problems(config: Config) -> list[str]:
    """Source patterns on a missing filesystem or matching nothing."""
    src = config.source
    if src.kind == "tfds":
        return [] if _has_tfds() else [TFDS_MISSING]
    problems = []
    for raw in split_patterns(src.pattern):
        problem = filesystem_problem(raw, "source.pattern")
        if problem:
            problems.append(problem)
            continue
        pattern = normalise_pattern(raw)
        try:
            if src.kind == "files":
                check_pattern_matches(pattern, IMAGE_EXTENSIONS)
            else:
                check_files_exist(pattern)
        except (ValueError, OSError) as exc:
            problems.append(f"source.pattern: {exc}")
    if src.labels == "folders" and not problems:
        root = source_root(src.pattern)
        try:
            class_folders(root)
        except (ValueError, OSError) as exc:
            problems.append(f"source.labels: {exc}")
    return problems


def preflight(config: Config, beam_args: Sequence[str], our_flags: Sequence[str]) -> list[str]:
    """Every problem found, one line each ([] when the run can start)."""
    beam_args = config.beam.flags(beam_args)  # the config's beam: section, then these
    problems = flag_problems(beam_args, our_flags, config.beam.names)
    options = PipelineOptions(beam_args)
    configure(options)  # the inputs are listed below, before any pipeline exists
    runner = runner_problem(options.view_as(StandardOptions).runner)
    problems += [runner] if runner else []
    for problem in (
        output_dir_problem(config.output.dir),
        filesystem_problem(config.model.name, "model.name"),
    ):
        if problem:
            problems.append(problem)
    if not any(p.startswith("model.name") for p in problems):
        model = model_file_problem(config.model.name, config.model.custom_objects)
        model = model or method_problem(config.model.name, config.saliency.methods)
        problems += [model] if model else []
    if is_dataflow(options):
        problems += dataflow_problems(options)
    if is_dry_run(options):  # Beam's --dry_run builds the job only: inputs are not read
        return problems
    return problems + input_problems(config)
