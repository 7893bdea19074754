"""The run summary: what the CLI prints at the end and run() saves as summary.json."""

import dataclasses
import time

from pipeline.config import Config


@dataclasses.dataclass(frozen=True)
class Summary:
    """The run summary printed at the end and saved as summary.json."""

    run_id: str
    output_dir: str
    inputs: int
    images_written: int
    images_failed: int
    images_skipped: int  # incremental runs: already done for the same content and settings
    records: int  # written by this run
    records_total: int  # in the output dir after publishing (earlier incremental runs too)
    maps_recomputed: int  # maps redone in float32 after a non-finite reduced-precision one
    elapsed_s: float
    images_per_s: float
    failure_fraction: float
    max_failure_fraction: float
    methods: tuple[str, ...]
    model: str
    incremental: bool
    shard_set: str
    reconciled: bool  # inputs == written + failed + skipped
    # how the model was explained where that differs from what was asked (engine notes)
    notes: tuple[str, ...] = ()

    @property
    def too_many_failures(self) -> bool:
        return self.failure_fraction > self.max_failure_fraction


def summarise(
    config: Config,
    counts: dict,
    *,
    output_dir: str,
    shard_set: str,
    records_total: int,
    start: float,
    notes: tuple[str, ...] = (),
) -> Summary:
    """The Summary of a finished run from its in-pipeline counts (started at ``start``,
    ``time.monotonic``)."""
    elapsed = time.monotonic() - start
    inputs = int(counts.get("inputs", 0))
    written = int(counts.get("images_written", 0))
    failed = int(counts.get("images_failed", 0))
    skipped = int(counts.get("skipped", 0))
    return Summary(
        run_id=config.run_id,
        output_dir=output_dir,
        inputs=inputs,
        images_written=written,
        images_failed=failed,
        images_skipped=skipped,
        records=int(counts.get("records", 0)),
        records_total=records_total,
        maps_recomputed=int(counts.get("maps_recomputed", 0)),
        elapsed_s=round(elapsed, 3),
        images_per_s=round(written / elapsed, 3) if elapsed > 0 else 0.0,
        # Of all inputs, skipped included: earlier failures are retried every run, so a
        # fraction of only the new work would trip on a bucket's few permanent bad files.
        failure_fraction=round(failed / inputs, 6) if inputs else 0.0,
        max_failure_fraction=config.run.max_failure_fraction,
        methods=config.saliency.methods,
        model=config.model.name,
        incremental=config.run.incremental,
        shard_set=shard_set,
        reconciled=inputs == written + failed + skipped,
        notes=tuple(notes),
    )
