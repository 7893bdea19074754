"""Peer libraries on the same model and images, each used the way its docs show.

Runs in-process when the peers import, or as ``python -m benchmarks.peers --json -`` under
another interpreter (peers need tf-keras / TF <= 2.20, so they live in their own virtual
environment; see benchmarks/RESULTS.md). The plain tf.function reference is measured in
the same process, so peer numbers can be compared across environments by their ratio to it.

Each peer explains the same random-weight, BatchNorm-calibrated MobileNetV2 224x224 on the
same photos and targets as bench.py:

- xplique: ``Saliency`` / ``GuidedBackprop`` / ``SmoothGrad(nb_samples=50, noise=0.2)``,
  ``batch_size`` = the batch, one-hot targets (its documented use).
- tf-keras-vis: ``Saliency(model, clone=False)`` with a ``CategoricalScore``, and
  ``smooth_samples=50, smooth_noise=0.2``; ``normalize_map=False``.
- PAIR saliency: ``GradientSaliency().GetMask`` per image and ``GetSmoothedMask(nsamples=50,
  stdev_spread=0.2, magnitude=False)``, with a call_model_function whose gradient runs in a
  tf.function (an eager tape through Conv2D can crash oneDNN on CPU; this is faster anyway).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import numpy as np

from benchmarks import common

PEERS = ("xplique", "tf_keras_vis", "saliency")


def available() -> dict[str, str | None]:
    """Peer name -> version, or None when it does not import here."""
    found: dict[str, str | None] = {}
    for name in PEERS:
        try:
            if name == "saliency":
                from importlib.metadata import version

                import saliency.core  # noqa: F401  (PAIR's framework-agnostic core)

                found[name] = version("saliency")
            else:
                module = __import__(name)
                found[name] = str(getattr(module, "__version__", "?"))
        except Exception:  # noqa: BLE001  any import failure means "not usable here"
            found[name] = None
    return found


def _time(call: Callable[[], Any], images: int, rounds: int) -> dict[str, Any]:
    call()  # warm-up (traces, model clones)
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    median = float(np.median(seconds))
    return {"images_per_s": images / median, "seconds": seconds, "images": images}


Contenders = dict[str, tuple[Callable[[], Any], int]]


def _reference(model: Any, x: np.ndarray, targets: np.ndarray) -> Callable[[], Any]:
    import tensorflow as tf

    xt, tt = tf.constant(x), tf.constant(targets.astype(np.int32))
    grad = common.reference_gradient(model)
    return lambda: grad(xt, tt).numpy()


def _xplique(model, x, targets, samples) -> Contenders:
    from xplique.attributions import GuidedBackprop, Saliency, SmoothGrad

    onehot = np.eye(int(model.outputs[0].shape[-1]), dtype=np.float32)[targets]
    batch = len(x)
    vanilla = Saliency(model, batch_size=batch)
    guided = GuidedBackprop(model, batch_size=batch)
    smooth = SmoothGrad(model, batch_size=batch, nb_samples=samples, noise=0.2)
    return {
        "vanilla": (lambda: np.asarray(vanilla.explain(x, onehot)), batch),
        "guided": (lambda: np.asarray(guided.explain(x, onehot)), batch),
        "smoothgrad": (lambda: np.asarray(smooth.explain(x, onehot)), batch),
    }


def _tf_keras_vis(model, x, targets, samples) -> Contenders:
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.scores import CategoricalScore

    saliency = Saliency(model, clone=False)  # logits model already: no modifier needed
    score = CategoricalScore([int(t) for t in targets])

    def smooth() -> Any:
        return saliency(score, x, smooth_samples=samples, smooth_noise=0.2, normalize_map=False)

    return {
        "vanilla": (lambda: saliency(score, x, normalize_map=False), len(x)),
        "smoothgrad": (smooth, len(x)),
    }


def _pair(model, x, targets, samples) -> Contenders:
    import saliency.core as pair
    import tensorflow as tf

    @tf.function
    def grad(inputs: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            score = model(inputs, training=False)[:, target]
        return tape.gradient(score, inputs)

    def call_model(images, call_model_args=None, expected_keys=None):
        target = call_model_args["target"]
        gradients = grad(tf.constant(images, tf.float32), tf.constant(target, tf.int32))
        return {pair.base.INPUT_OUTPUT_GRADIENTS: gradients.numpy()}

    method = pair.GradientSaliency()

    def vanilla() -> None:
        for image, target in zip(x, targets, strict=True):
            method.GetMask(image, call_model, {"target": int(target)})

    def smooth() -> None:  # one image: PAIR runs one noisy sample per call
        method.GetSmoothedMask(
            x[0],
            call_model,
            {"target": int(targets[0])},
            stdev_spread=0.2,
            nsamples=samples,
            magnitude=False,
        )

    return {"vanilla": (vanilla, len(x)), "smoothgrad": (smooth, 1)}


# tf-keras-vis 0.8 has no guided backprop; PAIR's guided backprop is in its TF1 module only.
_RUNNERS = {"xplique": _xplique, "tf_keras_vis": _tf_keras_vis, "saliency": _pair}

CAM_PEERS = ("xplique", "tf_keras_vis")  # PAIR's Grad-CAM is in its TF1 module only


def _gradcam_contenders(model, x, targets, layer: str, found: dict) -> Contenders:
    """Grad-CAM as each peer documents it, at ``layer``, maps upsampled to the input."""
    out: Contenders = {}
    if found.get("xplique"):
        from xplique.attributions import GradCAM

        onehot = np.eye(int(model.outputs[0].shape[-1]), dtype=np.float32)[targets]
        cam = GradCAM(model, conv_layer=layer, batch_size=len(x))
        out["xplique/gradcam"] = (lambda: np.asarray(cam.explain(x, onehot)), len(x))
    if found.get("tf_keras_vis"):
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.utils.scores import CategoricalScore

        gradcam = Gradcam(model, clone=False)
        score = CategoricalScore([int(t) for t in targets])
        out["tf_keras_vis/gradcam"] = (
            lambda: gradcam(score, x, penultimate_layer=layer, normalize_cam=False),
            len(x),
        )
    return out


def run_gradcam(*, batch: int = 8, rounds: int = 5, layer: str = "out_relu") -> dict[str, Any]:
    """Grad-CAM of the peers, timed round-robin with the plain reference (as ``run``)."""
    import keras

    found = available()
    result: dict[str, Any] = {"machine": common.machine(), "versions": found, "peers": {}}
    model = common.random_weight_model("MobileNetV2", keras_module=keras)
    common.calibrate_batchnorm(model, common.symmetric(common.photo_batch(16)))
    x = common.symmetric(common.photo_batch(batch))
    targets = np.argmax(np.asarray(model(x, training=False)), axis=1)
    contenders = {"reference/vanilla": (_reference(model, x, targets), batch)}
    contenders.update(_gradcam_contenders(model, x, targets, layer, found))
    for key, timing in common.interleaved(contenders, rounds=rounds, log=common.log).items():
        name, method = key.split("/")
        entry = {"images_per_s": timing.images_per_s, "seconds": list(timing.seconds)}
        if name == "reference":
            result["reference_vanilla"] = entry
        else:
            result["peers"].setdefault(name, {})[method] = entry
    return result


def run(
    *,
    batch: int = 8,
    rounds: int = 5,
    sg_rounds: int = 1,
    samples: int = 50,
    only: tuple[str, ...] = PEERS,
) -> dict[str, Any]:
    """Measure the reference and every importable peer; a JSON-ready dict.

    Vanilla and guided are timed round-robin with the plain reference (as in bench.py), so
    their ratios to it hold on a shared machine; SmoothGrad, slow, is timed on its own.
    """
    import keras

    found = available()
    result: dict[str, Any] = {"machine": common.machine(), "peers": {}, "versions": found}
    if not any(found[name] for name in only):
        result["note"] = "no peer library importable in this environment"
        return result
    model = common.random_weight_model("MobileNetV2", keras_module=keras)
    common.calibrate_batchnorm(model, common.symmetric(common.photo_batch(16)))
    x = common.symmetric(common.photo_batch(batch))
    targets = np.argmax(np.asarray(model(x, training=False)), axis=1)
    fast: Contenders = {"reference/vanilla": (_reference(model, x, targets), batch)}
    slow: Contenders = {}
    for name in only:
        if not found[name]:
            continue
        try:
            for method, contender in _RUNNERS[name](model, x, targets, samples).items():
                (slow if method == "smoothgrad" else fast)[f"{name}/{method}"] = contender
        except Exception as error:  # noqa: BLE001  report the failure, keep the others
            result["peers"][name] = {"error": f"{type(error).__name__}: {error}"[:500]}
    common.log(f"peers: vanilla / guided, {rounds} rounds with the reference")
    timings = common.interleaved(fast, rounds=rounds, warmup=1, log=common.log)
    for key, timing in timings.items():
        name, method = key.split("/")
        entry = {
            "images_per_s": timing.images_per_s,
            "seconds": list(timing.seconds),
            "images": timing.images,
        }
        if name == "reference":
            result["reference_vanilla"] = entry
        else:
            result["peers"].setdefault(name, {})[method] = entry
    for key, (call, images) in slow.items():
        name, method = key.split("/")
        common.log(f"peers: {key}")
        try:
            result["peers"][name][method] = _time(call, images, sg_rounds)
        except Exception as error:  # noqa: BLE001
            result["peers"][name][method] = {"error": f"{type(error).__name__}: {error}"[:500]}
        common.log(f"  {result['peers'][name][method].get('images_per_s')}")
    result["peak_rss_mib"] = common.peak_rss_mib()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sg-rounds", type=int, default=1)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--only", nargs="*", default=list(PEERS), choices=PEERS)
    parser.add_argument("--json", default="-", help="where to write the result ('-': stdout)")
    parser.add_argument("--gradcam", action="store_true", help="Grad-CAM of the peers only")
    args = parser.parse_args(argv)
    if args.gradcam:
        common.dump_json(run_gradcam(batch=args.batch, rounds=args.rounds), args.json)
        return 0
    result = run(
        batch=args.batch,
        rounds=args.rounds,
        sg_rounds=args.sg_rounds,
        samples=args.samples,
        only=tuple(args.only),
    )
    common.dump_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
