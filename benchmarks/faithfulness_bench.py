"""Deletion / insertion: ours (pipeline.audit.metrics.faithfulness) against xplique's
Deletion / Insertion (CausalFidelity) on the same model, images and maps.

    python -m benchmarks.faithfulness_bench --peers-python /work/benchvenv/bin/python

A small CNN (random weights, fixed seed) at 64x64, 32 images, maps = the sum over channels
of |vanilla gradient| from our engine, 10 steps, baseline 0, the target logit. The model
and data are saved under .bench/ and xplique runs on them in its own venv (it pulls TF
2.20). Reported: both AUCs (mean over images) and their difference, and the wall time of
each (the model calls included; the median of 5 calls after one untimed warm-up).
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


import numpy as np

from benchmarks import common

WORK = common.ROOT / ".bench" / "faithfulness"
STEPS = 10

PEER_SCRIPT = r"""
import json, sys, time, numpy as np, keras
from xplique.metrics import Deletion, Insertion
work = sys.argv[1]
data = np.load(f"{work}/data.npz")
model = keras.saving.load_model(f"{work}/model.keras", compile=False)
x, maps, t = data["images"], data["maps"], data["targets"]
onehot = np.eye(int(data["classes"]), dtype=np.float32)[t]
out = {}
for name, cls in (("deletion", Deletion), ("insertion", Insertion)):
    metric = cls(model, x, onehot, batch_size=256, baseline_mode=0.0, steps=int(data["steps"]))
    metric(maps)  # warm-up
    seconds = []
    for _ in range(5):
        start = time.perf_counter()
        auc = float(metric(maps))
        seconds.append(time.perf_counter() - start)
    out[name] = {"auc": auc, "seconds": float(np.median(seconds))}
print(json.dumps(out))
"""


def _setup() -> tuple:
    import keras

    from pipeline.audit.metrics.relevance import relevance
    from pipeline.engine.api import explain

    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 64, 3))
    h = keras.layers.Conv2D(16, 3, activation="relu", padding="same")(inputs)
    h = keras.layers.Conv2D(32, 3, strides=2, activation="relu", padding="same")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    x = np.random.default_rng(0).uniform(0, 1, (32, 64, 64, 3)).astype(np.float32)
    result = explain(model, x, "vanilla")
    maps = np.stack([relevance(g) for g in result.gradients])
    WORK.mkdir(parents=True, exist_ok=True)
    model.save(WORK / "model.keras")
    np.savez(WORK / "data.npz", images=x, maps=maps, targets=result.targets, classes=10,
             steps=STEPS)  # fmt: skip
    return model, x, maps, result.targets


def run(peers_python: str | None) -> dict:
    """Both AUCs and times (xplique's only when its venv is given)."""
    import tensorflow as tf

    from pipeline.audit.metrics import faithfulness

    model, x, maps, targets = _setup()
    predict_fn = tf.function(lambda b: model(b, training=False), autograph=False)

    def predict(batch: np.ndarray) -> np.ndarray:
        return predict_fn(tf.constant(batch)).numpy()

    ours = {}
    for mode in faithfulness.MODES:

        def go(mode: str = mode) -> np.ndarray:
            return faithfulness.curves(predict, x, maps, targets, mode=mode, steps=STEPS,
                                       chunk=256)  # fmt: skip

        go()  # warm-up (traces each chunk shape)
        seconds = []
        for _ in range(5):
            start = time.perf_counter()
            curves = go()
            seconds.append(time.perf_counter() - start)
        ours[mode] = {"auc": float(faithfulness.auc(curves).mean()),
                      "seconds": float(np.median(seconds))}  # fmt: skip

    def both() -> dict:  # what the model handler runs: both curves, the ends shared
        return faithfulness.deletion_and_insertion(predict, x, maps, targets, steps=STEPS,
                                                   chunk=256)  # fmt: skip

    both()
    seconds = []
    for _ in range(5):
        start = time.perf_counter()
        pair = both()
        seconds.append(time.perf_counter() - start)
    ours["both"] = {"auc": {m: float(faithfulness.auc(c).mean()) for m, c in pair.items()},
                    "seconds": float(np.median(seconds))}  # fmt: skip
    out = {"images": len(x), "size": 64, "steps": STEPS, "ours": ours}
    if peers_python:
        done = subprocess.run([peers_python, "-c", PEER_SCRIPT, str(WORK)], capture_output=True,
                              text=True, timeout=1200, check=False)  # fmt: skip
        if done.returncode != 0:
            out["xplique"] = {"error": done.stderr[-800:]}
        else:
            out["xplique"] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers-python", default=os.environ.get("BENCH_PEERS_PYTHON"))
    args = parser.parse_args()
    out = run(args.peers_python)
    rows = []
    for mode in ("deletion", "insertion"):
        ours = out["ours"][mode]
        peer = out.get("xplique", {}).get(mode)
        cells = [mode, f"{ours['auc']:.6f}"]
        if peer:
            cells += [f"{peer['auc']:.6f}", f"{abs(ours['auc'] - peer['auc']):.2e}"]
        else:
            cells += ["n/a", "n/a"]
        cells.append(f"{ours['seconds']:.3f} s")
        if peer:
            cells += [f"{peer['seconds']:.3f} s", f"{peer['seconds'] / ours['seconds']:.2f}x"]
        else:
            cells += ["n/a", "n/a"]
        rows.append(cells)
    both, peer = out["ours"]["both"], out.get("xplique")
    if peer and "deletion" in peer:
        total = peer["deletion"]["seconds"] + peer["insertion"]["seconds"]
        diff = max(abs(both["auc"][m] - peer[m]["auc"]) for m in ("deletion", "insertion"))
        rows.append(["both (the handler's call)", "", "", f"{diff:.2e}",
                     f"{both['seconds']:.3f} s", f"{total:.3f} s",
                     f"{total / both['seconds']:.2f}x"])  # fmt: skip
    header = ["", "ours AUC", "xplique AUC", "|difference|", "ours", "xplique", "speed-up"]
    print(common.markdown_table(header, rows))
    print(json.dumps(out, indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
