"""Grad-CAM throughput: our Explainer beside xplique's and tf-keras-vis's Grad-CAM.

    python -m benchmarks.gradcam_bench --peers-python /work/benchvenv/bin/python \\
        [--batch 8 32] [--rounds 5] [--json out.json]

Workload: keras.applications MobileNetV2 (random weights, BatchNorm calibrated on the bundled
photos, logits), 224x224, the bundled photos, each explained for its predicted class at the
layer ``out_relu`` (7x7x1280, the one ours finds), maps upsampled to 224x224. Ours is timed
round-robin with the plain reference gradient (benchmarks.common.reference_gradient) in this
process; the peers run in their own venv (they need TF 2.20 / tf-keras), timed round-robin
with the same reference there. The ratio compares each side's images/s divided by its own
process's reference, so two environments compare fairly. Target: >= 1.3x the faster peer.
Run alone: on 2 cores anything else heavy voids the figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

LAYER = "out_relu"
TARGET = 1.3


def ours(batch: int, rounds: int) -> dict[str, Any]:
    """Our Grad-CAM and the plain reference, interleaved, in this process."""
    import keras

    from pipeline.engine.explainer import Explainer

    model = common.random_weight_model("MobileNetV2", keras_module=keras)
    common.calibrate_batchnorm(model, common.symmetric(common.photo_batch(16)))
    x = common.symmetric(common.photo_batch(batch))
    targets = np.argmax(np.asarray(model(x, training=False)), axis=1)
    explainer = Explainer(model)
    import tensorflow as tf

    reference = common.reference_gradient(model)
    xt, tt = tf.constant(x), tf.constant(targets.astype(np.int32))

    def cam() -> Any:
        return explainer.explain(x, "gradcam", targets=targets).gradients

    contenders = {"reference/vanilla": (lambda: reference(xt, tt).numpy(), batch),
                  "ours/gradcam": (cam, batch)}  # fmt: skip
    timings = common.interleaved(contenders, rounds=rounds, log=common.log)
    return {key: {"images_per_s": t.images_per_s, "seconds": list(t.seconds)}
            for key, t in timings.items()}  # fmt: skip


def peers(python: str, batch: int, rounds: int) -> dict[str, Any]:
    command = [python, str(Path(__file__).with_name("peers.py")), "--gradcam",
               "--batch", str(batch), "--rounds", str(rounds), "--json", "-"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        return {"note": f"peer run failed (exit {done.returncode}): {done.stderr[-800:]}"}
    return json.loads(done.stdout)


def ratios(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Each side's Grad-CAM images/s over its own reference's, and ours / the faster peer."""
    own = mine["ours/gradcam"]["images_per_s"] / mine["reference/vanilla"]["images_per_s"]
    ref = theirs.get("reference_vanilla", {}).get("images_per_s")
    found = theirs.get("peers", {}).items()
    normalised = {name: r["gradcam"]["images_per_s"] / ref for name, r in found
                  if ref and "gradcam" in r}  # fmt: skip
    out: dict[str, Any] = {"ours_vs_reference": own, "peers_vs_reference": normalised}
    if normalised:
        best = max(normalised, key=normalised.get)
        out.update(faster_peer=best, ours_vs_faster_peer=own / normalised[best],
                   target=TARGET, met=own / normalised[best] >= TARGET)  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers-python", required=True)
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", default="-")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"machine": common.machine(), "layer": LAYER, "batches": {}}
    for batch in args.batch:
        common.log(f"batch {batch}: ours")
        mine = ours(batch, args.rounds)
        common.log(f"batch {batch}: peers under {args.peers_python}")
        theirs = peers(args.peers_python, batch, args.rounds)
        result["batches"][str(batch)] = {"ours": mine, "peers": theirs,
                                         "ratios": ratios(mine, theirs) if "peers" in theirs
                                         else None}  # fmt: skip
        common.log(f"  {result['batches'][str(batch)]['ratios']}")
    common.dump_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
