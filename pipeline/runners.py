"""Which Beam runner a ``--runner`` name means, for the job and the audit alike.

DirectRunner in Beam >= 2.6x first tries the Prism runner, which downloads a binary; the
local names run the FnApiRunner in this process instead (what DirectRunner falls back to
for batch pipelines; it honours --direct_num_workers and --direct_running_mode), so a local
run never needs the network. Any other name (Dataflow, Flink, Portable, ...) is Beam's.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

LOCAL_RUNNERS = (None, "DirectRunner", "direct", "FnApiRunner")


def make_runner(options: PipelineOptions):
    """The runner object for the options (FnApiRunner for the local names)."""
    name = options.view_as(StandardOptions).runner
    if name in LOCAL_RUNNERS:
        return FnApiRunner()
    return name
