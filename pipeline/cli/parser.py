"""The command line's grammar: every command, its flags and its help."""

from __future__ import annotations

import argparse

from pipeline import __version__
from pipeline.cli.exits import EXIT_CODES
from pipeline.console import LEVELS

__all__ = ["build_parser", "our_flags"]


def _hidden_verbosity(command: argparse.ArgumentParser) -> None:
    """-q / -v / --log-level, accepted but not listed (commands whose output is one table)."""
    for flag in ("--quiet", "--verbose"):
        command.add_argument(flag, flag[1:3], action="store_true", help=argparse.SUPPRESS)
    command.add_argument("--log-level", choices=LEVELS, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m pipeline`; Beam flags are left over (parse_known_args)."""
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
        "an output dir holding audit/audit.json. Rules: METRIC[@METHOD][[SLICE]]:CHANGE, e.g. "
        "pointing:-0.05 (absolute), energy_in_box:-10%% (relative), flags:+0, "
        "pointing@guided[site=B]:-0.05 (one slice).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    drift.add_argument("before", metavar="AUDIT_A")
    drift.add_argument("after", metavar="AUDIT_B")
    drift.add_argument("--fail-on", dest="rules", action="append", default=[], metavar="RULE")
    drift.add_argument("--json", action="store_true", help="print the whole comparison as JSON")
    drift.add_argument("--top", type=int, default=10, help="classes listed (default 10)")
    _hidden_verbosity(drift)
    board = sub.add_parser(
        "tensorboard",
        help="write OUT's audits as TensorBoard data (scalars, images, projector)",
        description="Write OUT/tensorboard/ from OUT's archived audits: one scalar step per "
        "audit, the newest audit's maps as images, and the Embedding Projector's strategy "
        "embeddings with sprites and metadata; then: tensorboard --logdir OUT/tensorboard. "
        "Once written, every audit of OUT rewrites it.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    board.add_argument("output", metavar="OUT", help="an output dir with audits/")
    _hidden_verbosity(board)
    export = sub.add_parser(
        "export",
        help="export OUT's records and audit to another tool (fiftyone)",
        description="fiftyone: make a persistent FiftyOne dataset with one sample per record "
        "(image, prediction, labels, boxes, each method's map as a heatmap, the audit's row "
        "metrics, clusters and flags as fields); then: fiftyone app launch NAME. Needs the "
        "fiftyone extra.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    export.add_argument("format", choices=("fiftyone",), help="the tool to export to")
    export.add_argument("output", metavar="OUT", help="an output dir (local)")
    export.add_argument("--name", default=None,
                        help="the dataset's name (default saliency-<OUT's folder>)")  # fmt: skip
    export.add_argument("--config", "-c", help="the run's config: its audit.annotations "
                        "(boxes, labels) and source.resize")  # fmt: skip
    export.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override a config value")  # fmt: skip
    _hidden_verbosity(export)
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
    _hidden_verbosity(demo)
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


def our_flags(parser: argparse.ArgumentParser) -> list[str]:
    """Every --flag the commands own (Beam flags are checked against the rest)."""
    flags = {s for a in parser._actions for s in a.option_strings}
    for action in parser._actions:
        for sub in getattr(action, "choices", None) or {}:
            if isinstance(action.choices, dict):
                flags |= {s for a in action.choices[sub]._actions for s in a.option_strings}
    return sorted(f for f in flags if f.startswith("--"))
