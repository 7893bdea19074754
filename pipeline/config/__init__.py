"""The job's configuration: one frozen section per stage (sections.py; the larger sections
in saliency.py, audit.py and beam.py), the checks every value passes (checks.py), and
YAML files with ``--set`` overrides (files.py). Import the sections from here."""

from pipeline.config.audit import AuditConfig
from pipeline.config.beam import BeamConfig
from pipeline.config.saliency import SaliencyConfig
from pipeline.config.sections import (
    SECTIONS,
    BatchConfig,
    Config,
    ModelConfig,
    OutputConfig,
    RunConfig,
    SourceConfig,
)

__all__ = [
    "SECTIONS",
    "AuditConfig",
    "BatchConfig",
    "BeamConfig",
    "Config",
    "ModelConfig",
    "OutputConfig",
    "RunConfig",
    "SaliencyConfig",
    "SourceConfig",
]
