"""Command line: argument parsing only.

    python -m pipeline run --config configs/local.yaml [--set section.key=value ...] [beam flags]
    python -m pipeline validate --config configs/local.yaml [--set ...]

Unknown flags (``--runner``, ``--direct_num_workers``, Dataflow and Flink flags) pass through
to Beam untouched.

Exit codes: 0 ok; 1 the run failed (nothing of it was published; rerun with the same config);
2 invalid config (nothing ran); 3 more than run.max_failure_fraction of the inputs failed
(everything else was published); 4 the model could not be loaded (nothing was read); 5 the
output dir is in use by another run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

import yaml

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_TOO_MANY_FAILURES = 3
EXIT_MODEL = 4
EXIT_BUSY = 5

_LOG = logging.getLogger("pipeline")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Saliency maps for Keras image classifiers over whole datasets (Beam).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("run", "run the job (extra flags go to Beam, e.g. --runner=DataflowRunner)"),
        ("validate", "check a config and print it resolved, without running anything"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", "-c", help="YAML config file (default: built-in defaults)")
        cmd.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override a config value (YAML syntax), e.g. saliency.methods=[guided]",
        )
        cmd.add_argument("--quiet", "-q", action="store_true", help="less logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m pipeline` and the `saliency-pipeline` script."""
    args, beam_args = _parser().parse_known_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The package is imported only now: TF_CPP_MIN_LOG_LEVEL must be set before TensorFlow
    # loads, and `validate` never needs TensorFlow or Beam.
    from pipeline.config import ConfigError, load_config

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "validate":
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return EXIT_OK

    from pipeline.beam.handler import ModelLoadError
    from pipeline.beam.run import run
    from pipeline.store.publish import OutputBusyError

    try:
        summary = run(config, beam_args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ModelLoadError as exc:
        print(f"error: the model could not be loaded, nothing was read: {exc}", file=sys.stderr)
        return EXIT_MODEL
    except OutputBusyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except Exception as exc:  # noqa: BLE001 - one clear line after the logged traceback
        _LOG.exception("the run failed")
        print(
            f"error: the run failed ({type(exc).__name__}: {exc}); nothing of it was "
            "published and earlier outputs are intact: rerun with the same config",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(json.dumps(summary.__dict__, indent=2, default=list))
    skipped = f", {summary.images_skipped} already done" if summary.incremental else ""
    print(
        f"{summary.images_written} of {summary.inputs} images explained, "
        f"{summary.images_failed} failed (see {summary.output_dir}/failures.jsonl){skipped}, "
        f"{summary.records} records, {summary.elapsed_s:.1f} s, "
        f"{summary.images_per_s:.2f} images/s -> {summary.output_dir}"
    )
    if summary.too_many_failures:
        print(
            f"error: {summary.failure_fraction:.1%} of inputs failed, above "
            f"run.max_failure_fraction={summary.max_failure_fraction}; everything written so "
            f"far is kept. See {summary.output_dir}/failures.jsonl",
            file=sys.stderr,
        )
        return EXIT_TOO_MANY_FAILURES
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
