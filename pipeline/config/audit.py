"""The ``audit:`` config section: the dataset audit's own settings (one stage, one section)."""

from __future__ import annotations

import dataclasses

from pipeline.config.checks import check_faithfulness, check_int, check_str, fail

# A slice spec: (column, fixed value or None) per column, in the order written.
SliceSpec = tuple[tuple[str, str | None], ...]


def slice_spec(text: object) -> SliceSpec:
    """``"site"``, ``"site,camera"``, ``"site=B"``, ``"site=B,camera"`` -> SliceSpec; a bad
    spec raises ValueError saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"slice {text!r}: a non-empty string is required")
    spec = []
    for part in text.split(","):
        column, has_value, value = (p.strip() for p in part.partition("="))
        if not column or (has_value and not value):
            raise ValueError(f"slice {text!r}: each part is COLUMN or COLUMN=VALUE")
        spec.append((column, value if has_value else None))
    if len({c for c, _ in spec}) != len(spec):
        raise ValueError(f"slice {text!r}: a column appears twice")
    return tuple(spec)


def slice_text(spec: SliceSpec) -> str:
    """The spec written back in its normal form (no spaces)."""
    return ",".join(c if v is None else f"{c}={v}" for c, v in spec)


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
    # Causal confirmation of each class flag (audit.causal.interventions): this many of its members
    # (the smallest key hashes) occluded, and up to 64 images of other classes given its
    # region, with the model on a worker (0: off; flags stay candidates).
    confirm_members: int = 32
    # Slices (TFMA's SlicingSpec): each a column (`site`: one slice per value), a cross
    # (`site,camera`: one per pair) or fixed values (`site=B`, `site=B,camera`). Columns:
    # the inputs' TFRecord features (single-valued), the annotations sidecar's fields and
    # `folder` (a file's folder below the patterns' root). Per slice: counts, accuracy,
    # metrics, mean maps and flags in audit.json and the report; drift rules take
    # `[slice]` (`pointing@guided[site=B]:-0.05`).
    slices: tuple[str, ...] = ()

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
        check_int("audit.confirm_members", self.confirm_members, minimum=0, maximum=10_000)
        slices = (self.slices,) if isinstance(self.slices, str) else self.slices
        if not isinstance(slices, (list, tuple)):
            fail("audit.slices", self.slices, "a list of slice specs is required",
                 "write e.g. slices: [site, 'site=B,camera']")  # fmt: skip
        try:
            specs = tuple(slice_spec(s) for s in slices)
        except ValueError as exc:
            fail("audit.slices", self.slices, str(exc), "write e.g. slices: [site, 'site=B']")
        object.__setattr__(self, "slices", tuple(slice_text(s) for s in specs))

    @property
    def faithfulness(self) -> int:
        """Deletion / insertion steps the run computes: 0 when the audit or they are off."""
        return self.faithfulness_steps if self.enabled else 0
