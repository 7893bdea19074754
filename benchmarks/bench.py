"""Saliency throughput: our engine and pipeline against a plain tf.function and the peers.

    python -m benchmarks.bench                      # the full table (about 7 min, 2 cores)
    python -m benchmarks.bench --quick              # smoke run (small, few repeats)
    python -m benchmarks.bench --peers-python /work/benchvenv/bin/python --json out.json

Sections (``--sections``):

- engine: random-weight MobileNetV2 224x224 (BatchNorm calibrated on the bundled photos),
  the plain reference (a batched ``tf.function`` GradientTape of the target logit, inputs
  already tensors) against ``Explainer.explain`` for vanilla, guided and SmoothGrad N=50,
  at each ``--batch``. Contenders are timed round-robin after untimed warm-ups, so a
  shared machine's noise hits all of them alike; every ratio comes from this one run.
- precision: ResNet50 vanilla, float32 against ``precision="auto"``, and the rank
  correlation of the two maps.
- peers: xplique, tf-keras-vis, PAIR saliency (benchmarks/peers.py), in this process when
  they import, else under ``--peers-python``; without them the table says so.
- pipeline: end-to-end DirectRunner against the model-only loop, peak RSS at N and 10N
  images, time to first written result (benchmarks/pipeline_bench.py).

Progress goes to stderr; stdout gets the markdown tables (and JSON with ``--json -``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import numpy as np

from benchmarks import api_bench, common
from benchmarks.bench_agreement import (
    _agreement,
    trained_example_agreement,
    trained_resnet50_agreement,
)
from benchmarks.bench_report import NOISE, SAMPLES, ratios, report

SECTIONS = ("engine", "api", "precision", "peers", "pipeline")
# --------------------------------------------------------------------------- reference


def reference_functions(model: Any):
    """The plain reference: one tf.function for the target-logit gradient of a batch, and
    SmoothGrad as N calls of it on batched noise (one noisy copy of each image per call)."""
    import tensorflow as tf

    gradient = common.reference_gradient(model)

    @tf.function
    def noisy_gradient(x: tf.Tensor, targets: tf.Tensor, sigma: tf.Tensor, seed: tf.Tensor):
        noise = tf.random.stateless_normal(tf.shape(x), seed)
        return gradient(x + sigma[:, None, None, None] * noise, targets)

    def smoothgrad(x: tf.Tensor, targets: tf.Tensor, samples: int) -> np.ndarray:
        sigma = NOISE * (tf.reduce_max(x, axis=[1, 2, 3]) - tf.reduce_min(x, axis=[1, 2, 3]))
        total = tf.zeros_like(x)
        for j in range(samples):
            total += noisy_gradient(x, targets, sigma, tf.constant([j, 0], tf.int64))
        return (total / samples).numpy()

    return gradient, smoothgrad


# --------------------------------------------------------------------------- sections


def engine_section(args: argparse.Namespace) -> dict[str, Any]:
    """Reference vs Explainer on MobileNetV2 for vanilla, guided, SmoothGrad."""
    common.log("engine: building MobileNetV2 (random weights, BN calibrated)")
    model = common.random_weight_model("MobileNetV2", args.size)
    common.calibrate_batchnorm(model, common.symmetric(common.photo_batch(16, args.size)))
    out: dict[str, Any] = {"model": "MobileNetV2", "size": args.size, "batches": {}}
    for batch in args.batch:
        out["batches"][str(batch)] = _engine_batch(model, batch, args)
    out["peak_rss_mib"] = common.peak_rss_mib()
    return out


def _engine_batch(model: Any, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    import tensorflow as tf

    from pipeline.engine.explainer import Explainer

    x = common.symmetric(common.photo_batch(batch, args.size))
    targets = np.argmax(np.asarray(model(x, training=False)), axis=1).astype(np.int32)
    xt, tt = tf.constant(x), tf.constant(targets)
    gradient, smoothgrad = reference_functions(model)
    explainer = Explainer(model, samples=SAMPLES, noise=NOISE, batch_size=args.chunk)

    def ours(method: str, engine: Any = explainer):
        return lambda: engine.explain(x, method, targets=targets)

    contenders = {
        "reference_vanilla": (lambda: gradient(xt, tt).numpy(), batch),
        "ours_vanilla": (ours("vanilla"), batch),
        "ours_guided": (ours("guided"), batch),
    }
    common.log(f"engine: batch {batch}, vanilla / guided ({args.repeats} rounds)")
    timings = common.interleaved(
        contenders,
        rounds=args.repeats,
        warmup=2,
        log=common.log,
    )
    row = {name: _timing_dict(t) for name, t in timings.items()}
    if batch in args.smoothgrad_batch:
        common.log(f"engine: batch {batch}, SmoothGrad N={SAMPLES} ({args.sg_repeats} rounds)")
        sg = common.interleaved(
            {
                "reference_smoothgrad": (lambda: smoothgrad(xt, tt, SAMPLES), batch),
                "ours_smoothgrad": (ours("smoothgrad"), batch),
            },
            rounds=args.sg_repeats,
            warmup=1,
            log=common.log,
        )
        row.update({name: _timing_dict(t) for name, t in sg.items()})
    row["traces"] = explainer.trace_count()
    return row


def precision_section(args: argparse.Namespace) -> dict[str, Any]:
    """ResNet50 vanilla: float32 against precision="auto", speed and map agreement.

    The agreement is put next to the map's own noise floor (float32 at the input rounded to
    bfloat16, and at a 1e-4 relative perturbation), and measured again on the trained example
    model, whose maps are not chaotic the way a random-weight ResNet50's are.
    """
    import tensorflow as tf

    from pipeline.engine.explainer import Explainer
    from pipeline.engine.precision import resolve_precision

    model = common.random_weight_model("ResNet50", args.size)
    resolved = resolve_precision("auto", model)
    common.log(f"precision: ResNet50, float32 vs auto (= {resolved})")
    batch = args.precision_batch
    x = common.caffe(common.photo_batch(batch, args.size))
    common.calibrate_batchnorm(model, common.caffe(common.photo_batch(16, args.size)))
    targets = np.argmax(np.asarray(model(x, training=False)), axis=1).astype(np.int32)
    exact = Explainer(model, precision="float32", batch_size=batch)
    auto = Explainer(model, precision="auto", batch_size=batch)
    timings = common.interleaved(
        {
            "float32": (lambda: exact.explain(x, "vanilla", targets=targets), batch),
            "auto": (lambda: auto.explain(x, "vanilla", targets=targets), batch),
        },
        rounds=args.repeats,
        warmup=2,
        log=common.log,
    )
    g32 = exact.explain(x, "vanilla", targets=targets).gradients
    reduced = auto.explain(x, "vanilla", targets=targets)
    rounded = tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy()
    nudged = x * (1 + 1e-4 * np.random.default_rng(0).standard_normal(x.shape))
    floor_rounded = exact.explain(rounded, "vanilla", targets=targets).gradients
    floor_nudged = exact.explain(nudged.astype(np.float32), "vanilla", targets=targets).gradients
    # Guided and SmoothGrad (the notebook's method) on the same model: their maps are not
    # chaotic the way the vanilla gradient of random weights is.
    common.log("precision: ResNet50 guided and smoothgrad maps, float32 vs auto")
    by_method = _agreement(exact, auto, x, targets, ("guided", "smoothgrad"))
    return {
        "model": "ResNet50",
        "batch": batch,
        "auto_resolves_to": resolved,
        "timings": {name: _timing_dict(t) for name, t in timings.items()},
        "rank_correlation": common.map_rank_correlation(g32, reduced.gradients),
        "noise_floor_input_rounded": common.map_rank_correlation(g32, floor_rounded),
        "noise_floor_relative_1e-4": common.map_rank_correlation(g32, floor_nudged),
        "recomputed": reduced.recomputed,
        "rank_correlation_by_method": by_method,
        "trained_example": trained_example_agreement(),
        "trained_resnet50": trained_resnet50_agreement(Path(args.trained_resnet50)),
        "peak_rss_mib": common.peak_rss_mib(),
    }


def peers_section(args: argparse.Namespace) -> dict[str, Any]:
    """The peer libraries, here or under --peers-python."""
    from benchmarks import peers

    options = dict(batch=args.peer_batch, rounds=args.peer_repeats, sg_rounds=1, samples=SAMPLES)
    if any(peers.available().values()):
        return {"where": "in-process", **peers.run(**options)}
    if not args.peers_python:
        return {
            "note": "peers not installed: pip install xplique==2.0.2 tf-keras-vis==0.8.7 "
            "saliency==0.2.1 into a separate venv (they pull TF 2.20), then "
            "--peers-python that/venv/bin/python (see benchmarks/RESULTS.md)"
        }
    common.log(f"peers: running under {args.peers_python}")
    command = [
        args.peers_python,
        "-m", "benchmarks.peers",
        "--batch", str(options["batch"]),
        "--rounds", str(options["rounds"]),
        "--sg-rounds", "1",
        "--samples", str(SAMPLES),
        "--json", "-",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=common.ROOT, capture_output=True, text=True, timeout=1800,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        return {"note": f"peer run failed (exit {done.returncode}): {done.stderr[-800:]}"}
    return {"where": args.peers_python, **json.loads(done.stdout)}


def pipeline_section(args: argparse.Namespace) -> dict[str, Any]:
    """End-to-end vs model-only, memory at N and 10N, time to first result."""
    from benchmarks import pipeline_bench

    return pipeline_bench.run(
        images=args.pipeline_images,
        method=args.pipeline_method,
        batch=args.pipeline_batch,
        memory_images=args.memory_images,
        quick=args.quick,
    )


def _timing_dict(timing: common.Timing) -> dict[str, Any]:
    return {
        "images_per_s": timing.images_per_s,
        "seconds": list(timing.seconds),
        "images": timing.images,
        "spread": timing.spread,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small and short")
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--size", type=int, default=224, help="input height = width")
    parser.add_argument("--batch", type=int, nargs="*", default=[8, 32])
    parser.add_argument("--smoothgrad-batch", type=int, nargs="*", default=[8])
    parser.add_argument(
        "--chunk",
        type=int,
        default=16,
        help="Explainer batch_size (SmoothGrad model inputs per step)",
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sg-repeats", type=int, default=3)
    parser.add_argument("--precision-batch", type=int, default=8)
    parser.add_argument(
        "--trained-resnet50",
        default=str(common.ROOT / ".bench" / "resnet50_shapes_64.keras"),
        help="a ResNet50 from benchmarks/train_resnet50.py (map agreement on trained weights)",
    )
    parser.add_argument("--peer-batch", type=int, default=8)
    parser.add_argument("--peer-repeats", type=int, default=5)
    parser.add_argument(
        "--peers-python",
        default=os.environ.get("BENCH_PEERS_PYTHON"),
        help="interpreter of a venv with the peers (also $BENCH_PEERS_PYTHON)",
    )
    parser.add_argument("--pipeline-images", type=int, default=96)
    parser.add_argument("--pipeline-method", default="smoothgrad")
    parser.add_argument("--pipeline-batch", type=int, default=8)
    parser.add_argument("--memory-images", type=int, default=12)
    parser.add_argument("--json", default=None, help="also write the raw results here")
    parser.add_argument(
        "--report-from", default=None, help="print the tables of an earlier --json; no timing"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.size = 96
        args.batch = [4]
        args.smoothgrad_batch = [4]
        args.repeats = 2
        args.sg_repeats = 1
        args.precision_batch = 2
        args.peer_repeats = 1
        args.pipeline_images = 8
        args.pipeline_method = "vanilla"
        args.memory_images = 4
    return args  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_from:  # re-render the tables of an earlier run's --json, measure nothing
        print(report(json.loads(Path(args.report_from).read_text())))
        return 0
    result: dict[str, Any] = {"machine": common.machine(), "args": vars(args)}
    started = time.perf_counter()
    runners = {
        "engine": engine_section,
        "api": api_bench.run,
        "precision": precision_section,
        "peers": peers_section,
        "pipeline": pipeline_section,
    }
    for section in args.sections:
        result[section] = runners[section](args)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = time.perf_counter() - started
    result["peak_rss_mib"] = common.peak_rss_mib()
    result["ratios"] = ratios(result)
    print(report(result))
    print(f"\nTotal benchmark wall time: {result['wall_s']:.0f} s.")
    common.dump_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
