"""Command line: the grammar (parser.py), one function per command (commands.py), what a
dry run prints (dry_run.py), and the exit codes with the exception each stands for
(exits.py).

    python -m pipeline run --config configs/local.yaml [--set section.key=value ...] [beam flags]
    python -m pipeline run --dry-run ...        # check everything, list inputs, run nothing
    python -m pipeline validate --config configs/local.yaml [--check] [--set ...]
    python -m pipeline audit --config configs/local.yaml
    python -m pipeline drift AUDIT_A AUDIT_B [--fail-on RULE ...]
    python -m pipeline demo [--out DIR]

Other flags (``--runner``, ``--direct_num_workers``, Dataflow and Flink flags) pass through to
Beam; an unknown or misspelled one is refused (exit 2) with a did-you-mean.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.cli.commands import COMMANDS, Call
from pipeline.cli.exits import (
    EXIT_AUDIT_FAILED,
    EXIT_BUSY,
    EXIT_CONFIG,
    EXIT_DRIFT,
    EXIT_FAILED,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_TOO_MANY_FAILURES,
    exit_for,
)
from pipeline.cli.parser import build_parser, our_flags
from pipeline.console import setup_logging

__all__ = [
    "EXIT_AUDIT_FAILED",
    "EXIT_BUSY",
    "EXIT_CONFIG",
    "EXIT_DRIFT",
    "EXIT_FAILED",
    "EXIT_MODEL",
    "EXIT_OK",
    "EXIT_TOO_MANY_FAILURES",
    "main",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m pipeline` and the `saliency-pipeline` script."""
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    setup_logging(quiet=args.quiet, verbose=args.verbose, level=args.log_level)
    call = Call(args=args, beam_args=tuple(beam_args), own_flags=tuple(our_flags(parser)))
    try:
        return COMMANDS[args.command](call)
    except Exception as exc:  # noqa: BLE001 - one clear line per failure; -v: the traceback
        return exit_for(exc, command=args.command)
