"""The Flex Template's entry point: Dataflow's launcher runs this file with the template's
parameters as flags (metadata.json) and Beam's own options (project, region,
temp_location, sdk_container_image, ... from the launch request).

    --config=gs://BUCKET/configs/nightly.yaml   the job (a YAML on GCS, or one in the image)
    --set=SECTION.KEY=VALUE[;SECTION.KEY=VALUE]  overrides, ';'-separated

It runs `python -m pipeline run` with them: the job is submitted, waited for and published
from the launcher (the publish step needs the launcher), then audited when the config
says so. Exit codes are the CLI's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline.cli import main as cli_main


def cli_args(argv: Sequence[str]) -> list[str]:
    """The `python -m pipeline run` arguments for the launcher's ``argv``."""
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args, beam = parser.parse_known_args(list(argv))
    sets = [s.strip() for group in args.overrides for s in group.split(";") if s.strip()]
    return ["run", "--config", args.config, *[a for s in sets for a in ("--set", s)], *beam]


if __name__ == "__main__":
    sys.exit(cli_main(cli_args(sys.argv[1:])))
