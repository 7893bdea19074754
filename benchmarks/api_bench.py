"""The library API on every call: ``explain()`` called 10 times on one model and batch.

MobileNetV2 with its softmax head (the keras.applications default, random weights,
BatchNorm calibrated on the bundled photos), vanilla, one batch:

- first calls, each from a cold start of its own: the plain reference (a fresh
  ``tf.function`` GradientTape on the logits twin: trace + run) and ``explain()`` (strip the
  softmax, the fold check, build, trace, run), timed once each;
- calls 2..10 of ``explain()``, timed one by one;
- then, round-robin after a warm-up: ``explain()`` (cached), the persistent ``Explainer``,
  the reference, and the Explainer of the force-folded model (what the BatchNorm fold
  would be worth where the check keeps it; on random weights it refuses it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from benchmarks import common

CALLS = 10


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The api section's measurements."""
    import keras
    import tensorflow as tf

    from pipeline.engine import api, folding
    from pipeline.engine.explainer import Explainer
    from pipeline.engine.heads import logits_model

    common.log("api: MobileNetV2 with its softmax head (random weights, BN calibrated)")
    logits = common.random_weight_model("MobileNetV2", args.size)
    common.calibrate_batchnorm(logits, common.symmetric(common.photo_batch(16, args.size)))
    softmax = keras.applications.MobileNetV2(weights=None, input_shape=(args.size,) * 2 + (3,))
    softmax.set_weights(logits.get_weights())
    batch = args.batch[0]
    x = common.symmetric(common.photo_batch(batch, args.size))
    targets = np.argmax(np.asarray(logits(x, training=False)), axis=1).astype(np.int32)
    xt, tt = tf.constant(x), tf.constant(targets)

    gradient = common.reference_gradient(logits)
    start = time.perf_counter()
    gradient(xt, tt).numpy()
    reference_first = time.perf_counter() - start

    api.clear_cache()
    calls = []
    for _ in range(CALLS):
        start = time.perf_counter()
        api.explain(softmax, x, "vanilla", targets=targets)
        calls.append(time.perf_counter() - start)
    median = statistics.median(calls[1:])
    common.log(
        f"api: first explain() {calls[0]:.2f} s, calls 2-{CALLS} median {median:.3f} s; "
        f"reference first {reference_first:.2f} s"
    )

    persistent = Explainer(softmax)
    fold = persistent.fold_report()
    base = logits_model(softmax)[0]
    forced = Explainer(folding._clone_folded(base, folding._foldable_pairs(base)))
    timings = common.interleaved(
        {
            "explain_call": (lambda: api.explain(softmax, x, "vanilla", targets=targets), batch),
            "persistent": (lambda: persistent.explain(x, "vanilla", targets=targets), batch),
            "reference": (lambda: gradient(xt, tt).numpy(), batch),
            "persistent_force_folded": (
                lambda: forced.explain(x, "vanilla", targets=targets),
                batch,
            ),
        },
        rounds=2 * args.repeats,  # four contenders, a ~2% difference: more rounds
        warmup=1,
        log=common.log,
    )
    rates = {name: t.images_per_s for name, t in timings.items()}
    return {
        "model": "MobileNetV2 (softmax head)",
        "size": args.size,
        "batch": batch,
        "first_call_s": calls[0],
        "reference_first_call_s": reference_first,
        "calls_2_to_10_s": calls[1:],
        "sequential_ratio": (batch / statistics.median(calls[1:])) / rates["persistent"],
        "images_per_s": rates,
        "calls_vs_persistent": rates["explain_call"] / rates["persistent"],
        "fold": {"folded": fold.folded, "error": fold.gradient_error, "reason": fold.reason},
        "softmax_stripped": persistent.softmax_stripped,
    }


def table(api: dict[str, Any]) -> str:
    """The api section as markdown."""
    rates = api["images_per_s"]
    rows = [
        ["explain() first call (cold: strip, fold check, build, trace, run)",
         f"{api['first_call_s']:.2f} s", ""],
        ["plain reference first call (trace + run)", f"{api['reference_first_call_s']:.2f} s", ""],
        [f"explain() calls 2-{CALLS}, one by one (median)",
         f"{statistics.median(api['calls_2_to_10_s']):.3f} s",
         f"{api['sequential_ratio']:.3f}x persistent"],
        ["explain() cached, round-robin", f"{rates['explain_call']:.1f} images/s",
         f"{api['calls_vs_persistent']:.3f}x persistent"],
        ["persistent Explainer", f"{rates['persistent']:.1f} images/s", ""],
        ["plain tf.function reference", f"{rates['reference']:.1f} images/s", ""],
        ["persistent Explainer, fold forced", f"{rates['persistent_force_folded']:.1f} images/s",
         f"{rates['persistent_force_folded'] / rates['persistent']:.2f}x unforced"],
    ]  # fmt: skip
    fold = api["fold"]
    note = (
        f"\nFold check on this model: folded={fold['folded']} ({fold['reason']}). "
        f"Softmax stripped: {api['softmax_stripped']}.\n"
    )
    title = f"{api['model']} {api['size']}x{api['size']}, batch {api['batch']}, vanilla"
    return (
        f"### explain() on every call ({title})\n\n"
        + common.markdown_table(["what", "measured", "ratio"], rows)
        + note
    )
