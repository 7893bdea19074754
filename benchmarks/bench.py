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

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `pipeline` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import api_bench, common  # noqa: E402

SECTIONS = ("engine", "api", "precision", "peers", "pipeline")
SAMPLES = 50
NOISE = 0.2

# The targets, as (key, text, threshold); each measured ratio is held against one.
TARGETS = (
    ("vanilla_vs_reference", "vanilla >= 1.0x the plain tf.function reference", 1.0),
    ("vanilla_vs_best_peer", "vanilla >= 1.3x the best peer", 1.3),
    ("api_calls_vs_persistent", "explain() calls 2-10 >= 0.95x the persistent Explainer", 0.95),
    ("guided_vs_vanilla", "guided >= 0.9x our own vanilla", 0.9),
    ("smoothgrad_vs_reference", "SmoothGrad N=50 >= 0.9x (reference vanilla / 50)", 0.9),
    ("smoothgrad_vs_best_peer", "SmoothGrad N=50 >= 1.2x the best peer", 1.2),
    ("auto_vs_float32", "precision=auto >= 1.3x float32 on ResNet50", 1.3),
    (
        "auto_rank_correlation",
        "auto maps rank-correlated with float32 >= 0.95 (trained ResNet50, worst method)",
        0.95,
    ),
    (
        "auto_rank_correlation_random",
        "(random-weight ResNet50, vanilla: chaotic, see its noise floor) >= 0.95",
        0.95,
    ),
    ("pipeline_vs_model_only", "end-to-end >= 0.9x the model-only loop", 0.9),
    (
        "pipeline_vs_steady_loop",
        "(stricter) end-to-end >= 0.9x the loop's steady state, load and traces excluded",
        0.9,
    ),
    ("memory_growth_10x", "peak RSS at 10x images <= 1.2x (flat within 20%)", None),
    ("first_result_s", "first written result <= 20 s (configs/local.yaml)", None),
)


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
        "trained_example": _trained_example_agreement(),
        "trained_resnet50": _trained_resnet50_agreement(Path(args.trained_resnet50)),
        "peak_rss_mib": common.peak_rss_mib(),
    }


def _trained_resnet50_agreement(path: Path) -> dict[str, Any] | None:
    """float32 against auto on a ResNet50 trained here (benchmarks/train_resnet50.py) on
    held-out shapes images: per-method rank correlation and the vanilla noise floor.
    None when the model file is absent (the table says how to make it)."""
    import tensorflow as tf

    from benchmarks.train_resnet50 import held_out
    from pipeline.engine.explainer import Explainer

    if not path.exists():
        common.log(
            f"precision: no trained ResNet50 at {path} (python -m benchmarks.train_resnet50)"
        )
        return None
    import keras

    common.log(f"precision: trained ResNet50 {path.name}, float32 vs auto")
    model = keras.saving.load_model(path)
    pixels, labels = held_out(16)
    x = common.caffe(pixels)
    exact = Explainer(model, samples=SAMPLES, batch_size=16)
    auto = Explainer(model, samples=SAMPLES, batch_size=16, precision="auto")
    logits = exact.logits(x)
    targets = np.argmax(logits, axis=1)
    out: dict[str, Any] = {"accuracy_on_these": float(np.mean(targets == labels))}
    facts = path.with_suffix(".json")
    if facts.exists():
        out["training"] = json.loads(facts.read_text())
    out.update(_agreement(exact, auto, x, targets, ("vanilla", "guided", "smoothgrad")))
    # The same comparison within float32, at the input rounded to bfloat16 (a few ms here).
    rounded = tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy()
    out["vanilla_noise_floor_input_rounded"] = _agreement(
        exact, exact, x, targets, ("vanilla",), other_x=rounded
    )["vanilla"]
    return out


def _trained_example_agreement() -> dict[str, float]:
    """Rank correlation of float32 and auto maps of the trained example model."""
    from pipeline.engine.explainer import Explainer
    from pipeline.engine.models import ModelSpec, load_model
    from pipeline.store.decode import decode_image, resize

    loaded = load_model(
        ModelSpec(name=str(common.ROOT / "examples/model/shapes_cnn.keras"), preprocessing="unit")
    )
    paths = sorted(
        p
        for p in (common.ROOT / "examples/images").iterdir()
        if p.suffix.lower() in (".png", ".jpg")
    )
    pixels = np.stack(
        [
            resize(
                decode_image(p.read_bytes(), channels=loaded.channels, max_pixels=10**8),
                tuple(loaded.input_size),
                "resize",
            )
            for p in paths
        ]
    ).astype(np.float32)
    x = np.asarray(loaded.preprocess(pixels), np.float32)
    exact = Explainer(loaded.model, samples=SAMPLES)
    auto = Explainer(loaded.model, samples=SAMPLES, precision="auto")
    targets = np.argmax(exact.logits(x), axis=1)
    return _agreement(exact, auto, x, targets, ("vanilla", "guided", "smoothgrad"))


def _agreement(
    exact: Any, other: Any, x: np.ndarray, targets: np.ndarray, methods, *, other_x=None
) -> dict:
    """Per method, the map rank correlation of two Explainers (``other`` on ``other_x``
    when given, else on the same images)."""
    other_x = x if other_x is None else other_x
    out = {}
    for method in methods:
        a = exact.explain(x, method, targets=targets).gradients
        b = other.explain(other_x, method, targets=targets).gradients
        out[method] = common.map_rank_correlation(a, b)
    return out


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
        str(Path(__file__).with_name("peers.py")),
        "--batch", str(options["batch"]),
        "--rounds", str(options["rounds"]),
        "--sg-rounds", "1",
        "--samples", str(SAMPLES),
        "--json", "-",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
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


# --------------------------------------------------------------------------- report


def ratios(result: dict[str, Any]) -> dict[str, float | None]:
    """Every target's measured value, from this one run (None: not measured)."""
    out: dict[str, float | None] = {key: None for key, _, _ in TARGETS}
    engine = result.get("engine")
    if engine:
        rows = engine["batches"]
        first = rows[str(min(int(b) for b in rows))]
        ref = first["reference_vanilla"]["images_per_s"]
        ours = first["ours_vanilla"]["images_per_s"]
        out["vanilla_vs_reference"] = ours / ref
        out["guided_vs_vanilla"] = first["ours_guided"]["images_per_s"] / ours
        if "ours_smoothgrad" in first:
            out["smoothgrad_vs_reference"] = first["ours_smoothgrad"]["images_per_s"] / (
                ref / SAMPLES
            )
        best = _best_peers(result.get("peers", {}))
        if best.get("vanilla"):
            out["vanilla_vs_best_peer"] = (ours / ref) / best["vanilla"]
        if best.get("smoothgrad") and "ours_smoothgrad" in first:
            sg = first["ours_smoothgrad"]["images_per_s"] / ref
            out["smoothgrad_vs_best_peer"] = sg / best["smoothgrad"]
    if result.get("api"):
        out["api_calls_vs_persistent"] = result["api"]["calls_vs_persistent"]
    precision = result.get("precision")
    if precision:
        t = precision["timings"]
        out["auto_vs_float32"] = t["auto"]["images_per_s"] / t["float32"]["images_per_s"]
        out["auto_rank_correlation_random"] = precision["rank_correlation"]
        trained = precision.get("trained_resnet50")
        if trained:
            methods = ("vanilla", "guided", "smoothgrad")
            out["auto_rank_correlation"] = min(trained[m] for m in methods)
    pipe = result.get("pipeline")
    if pipe:
        out["pipeline_vs_model_only"] = pipe.get("ratio")
        out["pipeline_vs_steady_loop"] = pipe.get("steady_ratio")
        out["memory_growth_10x"] = pipe.get("memory_growth")
        out["first_result_s"] = pipe.get("first_result_s")
    return out


def _best_peers(peers: dict[str, Any]) -> dict[str, float]:
    """Best peer images/s per method, normalised by the peer process's own reference
    (so a peer measured in another environment or moment compares fairly)."""
    ref = peers.get("reference_vanilla", {}).get("images_per_s")
    if not ref:
        return {}
    best: dict[str, float] = {}
    for result in peers.get("peers", {}).values():
        for method, timing in result.items():
            if isinstance(timing, dict) and "images_per_s" in timing:
                best[method] = max(best.get(method, 0.0), timing["images_per_s"] / ref)
    return best


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def report(result: dict[str, Any]) -> str:
    """The markdown tables."""
    parts = []
    m = result["machine"]
    parts.append(
        f"Machine: {m['nproc']} cores, {m['cpu']} ({', '.join(m['flags'])}), "
        f"{m['memory_gib']} GiB; load average at start {m['loadavg']}, at end "
        f"{result.get('loadavg_end')}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    )
    engine = result.get("engine")
    if engine:
        rows = []
        # Numeric order: a JSON round trip with sorted keys puts "32" before "8".
        for batch, row in sorted(engine["batches"].items(), key=lambda item: int(item[0])):

            def cell(name: str, row: dict = row) -> str:
                timing = row.get(name)
                if not timing:
                    return ""
                return f"{timing['images_per_s']:.2f} (±{timing['spread'] / 2:.0%})"

            rows.append(
                [
                    f"plain batched tf.function GradientTape, batch {batch}",
                    cell("reference_vanilla"),
                    "",
                    cell("reference_smoothgrad"),
                ]
            )
            rows.append(
                [
                    f"ours (Explainer), batch {batch}",
                    cell("ours_vanilla"),
                    cell("ours_guided"),
                    cell("ours_smoothgrad"),
                ]
            )
        rows += _peer_rows(result.get("peers", {}))
        parts.append(
            f"### {engine['model']} {engine['size']}x{engine['size']}, images/s "
            f"(median; ± half the spread of the timed calls); SmoothGrad N={SAMPLES}\n\n"
            + common.markdown_table(["images/s", "vanilla", "guided", "SmoothGrad N=50"], rows)
        )
    if result.get("api"):
        parts.append(api_bench.table(result["api"]))
    precision = result.get("precision")
    if precision:
        t = precision["timings"]
        parts.append(
            f"### ResNet50 224x224, batch {precision['batch']}: speed of vanilla; map agreement "
            "(random weights, BatchNorm calibrated, unless the row says trained)\n\n"
            + common.markdown_table(
                ["precision", "images/s", "rank correlation with float32"],
                [
                    ["float32", _fmt(t["float32"]["images_per_s"]), "1"],
                    [
                        f"auto (= {precision['auto_resolves_to']})",
                        _fmt(t["auto"]["images_per_s"]),
                        _fmt(precision["rank_correlation"], 4),
                    ],
                ]
                + [
                    [f"auto, {method} maps", "", _fmt(value, 4)]
                    for method, value in precision.get("rank_correlation_by_method", {}).items()
                ]
                + [
                    [
                        "float32 at the input rounded to bfloat16 (noise floor)",
                        "",
                        _fmt(precision.get("noise_floor_input_rounded"), 4),
                    ],
                    [
                        "float32 at a 1e-4 relative input perturbation (noise floor)",
                        "",
                        _fmt(precision.get("noise_floor_relative_1e-4"), 4),
                    ],
                ]
                + [
                    [
                        f"trained example model (shapes_cnn), {method}: auto vs float32",
                        "",
                        _fmt(value, 4),
                    ]
                    for method, value in sorted(
                        precision.get("trained_example", {}).items(), key=_method_order
                    )
                ]
                + _trained_resnet50_rows(precision.get("trained_resnet50")),
            )
        )
    pipe = result.get("pipeline")
    if pipe:
        parts.append(pipe_table(pipe))
    measured = ratios(result)
    rows = []
    for key, text, threshold in TARGETS:
        value = measured[key]
        if key == "memory_growth_10x":
            met = None if value is None else value <= 1.2
        elif key == "first_result_s":
            met = None if value is None else value <= 20.0
        else:
            met = None if value is None else value >= threshold
        rows.append(
            [text, _fmt(value, 3), {None: "not measured", True: "met", False: "MISSED"}[met]]
        )
    parts.append("### Targets\n\n" + common.markdown_table(["target", "measured", ""], rows))
    if "peak_rss_mib" in result:
        parts.append(f"Peak RSS of this benchmark process: {result['peak_rss_mib']:.0f} MiB.")
    return "\n\n".join(parts)


def _peer_rows(peers: dict[str, Any]) -> list[list[str]]:
    if "peers" not in peers:
        return [["peers", peers.get("note", "not run"), "", ""]]
    rows = []
    ref = peers.get("reference_vanilla", {}).get("images_per_s")
    where = peers.get("machine", {}).get("versions", {})
    label = f"TF {where.get('tensorflow', '?')}, Keras {where.get('keras', '?')}"
    if ref:
        rows.append([f"plain reference in the peers' process ({label})", _fmt(ref), "", ""])
    for name, result in peers["peers"].items():
        version = peers.get("versions", {}).get(name)
        if "error" in result:
            rows.append([f"{name} {version}", result["error"][:80], "", ""])
            continue

        def cell(method: str, result: dict = result) -> str:
            timing = result.get(method) or {}
            if "error" in timing:
                return timing["error"][:60]
            return _fmt(timing.get("images_per_s"), 3) if timing else ""

        rows.append([f"{name} {version}", cell("vanilla"), cell("guided"), cell("smoothgrad")])
    for name, version in peers.get("versions", {}).items():
        if version is None:
            rows.append([name, "not installed", "", ""])
    return rows


def _method_order(item: tuple[str, Any]) -> int:
    order = ("vanilla", "guided", "smoothgrad")
    return order.index(item[0]) if item[0] in order else len(order)


def _trained_resnet50_rows(trained: dict[str, Any] | None) -> list[list[str]]:
    if not trained:
        return [["trained ResNet50", "", "not measured: python -m benchmarks.train_resnet50"]]
    rows = [
        [f"trained ResNet50 (shapes, 64x64), {method}: auto vs float32", "", _fmt(trained[m], 4)]
        for method, m in (
            ("vanilla", "vanilla"),
            ("guided", "guided"),
            ("SmoothGrad", "smoothgrad"),
        )
    ]
    rows.append(
        [
            "trained ResNet50, vanilla: float32 at the input rounded to bfloat16 (noise floor)",
            "",
            _fmt(trained.get("vanilla_noise_floor_input_rounded"), 4),
        ]
    )
    return rows


def pipe_table(pipe: dict[str, Any]) -> str:
    """The pipeline section's table."""
    rows = [
        [
            f"model-only loop ({pipe['method']}, {pipe['images']} images, batch {pipe['batch']}), "
            "from the model load",
            _fmt(pipe.get("model_only_images_per_s")),
            f"{_fmt(pipe.get('model_only_steady_images_per_s'))} images/s after the first batch",
        ],
        [
            "end-to-end DirectRunner (read -> every output written)",
            _fmt(pipe.get("pipeline_images_per_s")),
            f"run() {pipe.get('pipeline_wall_s', 0):.1f} s wall; ratio "
            f"{_fmt(pipe.get('ratio'), 3)} (steady-state {_fmt(pipe.get('steady_ratio'), 3)}, "
            f"CPU-seconds {_fmt(pipe.get('cpu_ratio'), 3)})",
        ],
        [
            f"peak RSS, {pipe.get('memory_images')} images",
            f"{_fmt(pipe.get('rss_small_mib'), 0)} MiB",
            "",
        ],
        [
            f"peak RSS, {10 * (pipe.get('memory_images') or 0)} images",
            f"{_fmt(pipe.get('rss_large_mib'), 0)} MiB",
            f"x{_fmt(pipe.get('memory_growth'))}",
        ],
        [
            "time to first written result (configs/local.yaml)",
            f"{_fmt(pipe.get('first_result_s'))} s",
            "",
        ],
    ]
    return "### Pipeline\n\n" + common.markdown_table(["", "images/s", "note"], rows)


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
