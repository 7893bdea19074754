"""The ``audit:`` config section: the dataset audit's own settings (one stage, one section)."""

from __future__ import annotations

import dataclasses

from pipeline.validation import check_faithfulness, check_int, check_str, fail


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """The dataset audit over a run's published records (``python -m pipeline audit``, or
    after every run when enabled)."""

    # Audit the published records after every run (on in configs/local.yaml).
    enabled: bool = False
    # JSONL sidecar, one row per image: {"key", "boxes": [[ymin, xmin, ymax, xmax], ...] in
    # the ORIGINAL image's pixels (max exclusive), optional "label", optional "mask"}.
    # "": no annotations.
    annotations: str = ""
    map_size: int = 16  # maps are aggregated and clustered at map_size x map_size
    reservoir: int = 512  # maps kept per (class, method) for strategy discovery
    neighbours: int = 10  # SpRAy's kNN graph
    max_clusters: int = 8  # SpRAy's largest k
    # Deletion / insertion curves, computed in the model handler during the run (0: off).
    faithfulness_steps: int = 10
    faithfulness_baseline: float = 0.0  # the removed pixels' value, in the model's input space
    # Of the records (chosen by key hash, the same on every rerun): the curves cost
    # 2 * (steps - 1) forward passes per method and image (10%: the audit's per-image cost
    # stays within 1.25x of the run's, benchmarks/RESULTS.md).
    faithfulness_fraction: float = 0.1
    sanity_samples: int = 16  # images in the cascading-randomisation check (0: off)
    sanity_layers: int = 3  # top layers randomised, one more per step

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            fail("audit.enabled", self.enabled, "true or false is required")
        check_str("audit.annotations", self.annotations, empty_ok=True)
        check_int("audit.map_size", self.map_size, minimum=4, maximum=256)
        check_int("audit.reservoir", self.reservoir, minimum=2, maximum=100_000)
        check_int("audit.neighbours", self.neighbours, minimum=1, maximum=1000)
        check_int("audit.max_clusters", self.max_clusters, minimum=1, maximum=64)
        check_faithfulness(
            "audit.", self.faithfulness_steps, self.faithfulness_baseline,
            self.faithfulness_fraction,
        )  # fmt: skip
        check_int("audit.sanity_samples", self.sanity_samples, minimum=0, maximum=10_000)
        check_int("audit.sanity_layers", self.sanity_layers, minimum=1, maximum=1000)

    @property
    def faithfulness(self) -> int:
        """Deletion / insertion steps the run computes: 0 when the audit or they are off."""
        return self.faithfulness_steps if self.enabled else 0
