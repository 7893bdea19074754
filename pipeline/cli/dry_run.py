"""What `run --dry-run` and `validate --check` print: the model, the inputs and what a run
would do (or the Dataflow job built offline); nothing is run or written."""

from __future__ import annotations

import json
from collections.abc import Sequence

from pipeline.beam.dataflow import describe
from pipeline.beam.run import input_total
from pipeline.cli.exits import EXIT_OK
from pipeline.engine.model_geometry import model_geometry, model_notes
from pipeline.store.class_names import configured_class_names
from pipeline.store.listing import list_pattern, normalise_pattern, split_patterns

__all__ = ["dataflow_dry_run", "dry_run"]

DRY_RUN_INPUTS = 10  # inputs listed by --dry-run / validate --check


def dry_run(config, beam_args: Sequence[str]) -> int:
    """Load the model, list the first inputs, say what a run would do; write nothing."""
    names = configured_class_names(config.model.class_names)
    geometry = model_geometry(config.model, class_names=names)  # ModelLoadError: EXIT_MODEL
    src, s = config.source, config.saliency
    total = input_total(config)
    print(f"model: {geometry.name} (input {geometry.input_size[0]}x{geometry.input_size[1]}x"
          f"{geometry.channels}, fingerprint {geometry.fingerprint[:12]})")  # fmt: skip
    print(f"inputs: {src.kind} {src.pattern or src.tfds_name}: "
          f"{'?' if total is None else total} images")  # fmt: skip
    if src.kind == "files":
        shown = 0
        for pattern in split_patterns(src.pattern):
            for _, key in list_pattern(normalise_pattern(pattern)):
                if shown == DRY_RUN_INPUTS:
                    break
                print(f"  {key}")
                shown += 1
        if total is not None and total > shown:
            print(f"  ... and {total - shown} more")
    print(
        f"would compute: {', '.join(s.methods)} for the {s.target} class (SmoothGrad N="
        f"{s.samples}, noise {s.noise}; precision {s.precision}), batches of "
        f"{config.batch.max_batch_size}"
    )
    for note in model_notes(config.model, s):  # e.g. a SavedModel's precision, and why
        print(f"note: {note}")
    views = ", ".join(config.output.views) if config.output.artifacts else "no artifacts"
    print(
        f"would write: {config.output.dir} (records: {config.output.records}; {views}; "
        f"incremental: {config.run.incremental}); runner: "
        f"{_runner(config.beam.flags(beam_args))}. Nothing was run or written."
    )
    return EXIT_OK


def dataflow_dry_run(config, beam_args: Sequence[str], *, as_json: bool) -> int:
    """Build the Dataflow job offline and say what it would start; submit nothing."""
    job = describe(config, beam_args)  # a ConfigError maps to EXIT_CONFIG (cli.exits)
    if as_json:
        print(json.dumps(job, indent=2))
        return EXIT_OK
    print(f"Dataflow job built, not submitted: {job['transforms']} transforms "
          f"({', '.join(job['top_level_transforms'])})")  # fmt: skip
    print(f"workers: up to {job['max_num_workers']} x {job['machine_type']}, "
          f"{', '.join(job['service_options']) or 'no service options'}, "
          f"one SDK process per VM: {job['one_sdk_process_per_vm']}")  # fmt: skip
    print(f"image: {', '.join(job['container_images'])}")
    print(f"project {job['project']}, region {job['region']}. Nothing was staged or run.")
    return EXIT_OK


def _runner(beam_args: Sequence[str]) -> str:
    for i, arg in enumerate(beam_args):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1]
        if arg == "--runner" and i + 1 < len(beam_args):
            return beam_args[i + 1]
    return "DirectRunner (in-process)"
