"""Measured anchor for the GPU estimates: input-gradient throughput of the same Keras models
on a real GPU, with Keras 3 on the JAX backend.

    KERAS_BACKEND=jax python benchmarks/gpu_anchor.py --out gpu.json

Why JAX: the GPU machine this project could borrow has CUDA, JAX and PyTorch but no
TensorFlow (and a TF wheel is too large to carry there), so the TF engine itself could not
run on it. The same keras.applications graph, its logits' input gradient (no weight
gradients, variables fed as constants, one jit per batch shape) is the ceiling an
XLA-compiled engine can reach; benchmarks/RESULTS.md turns the measured utilisation into
the T4 / L4 / A100 estimates. Only numpy, jax and keras are needed (no pipeline import).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import time
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")

CONFIGS = (
    ("ResNet50", "float32", 128),
    ("ResNet50", "mixed_float16", 128),
    ("ResNet50", "mixed_float16", 32),
    ("ResNet50", "mixed_bfloat16", 128),
    ("MobileNetV2", "float32", 128),
    ("MobileNetV2", "mixed_float16", 128),
    ("MobileNetV2", "mixed_float16", 32),
)


def measure(name: str, policy: str, batch: int, calls: int, size: int = 224) -> dict[str, Any]:
    """Images/s of the target-logit input gradient (and of the forward pass alone)."""
    import jax
    import jax.numpy as jnp
    import keras
    import numpy as np

    keras.config.set_dtype_policy(policy)
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(size, size, 3), classifier_activation=None
    )
    trainable = [v.value for v in model.trainable_variables]
    fixed = [v.value for v in model.non_trainable_variables]
    scale = 2.0**12 if policy == "mixed_float16" else 1.0  # the engine's fp16 loss scale

    def score(x, targets, trainable, fixed):
        logits, _ = model.stateless_call(trainable, fixed, x, training=False)
        picked = jnp.take_along_axis(logits.astype(jnp.float32), targets[:, None], axis=1)
        return jnp.sum(picked) * scale

    def gradient(x, targets, trainable, fixed):
        return jax.grad(score)(x, targets, trainable, fixed) / scale

    def forward(x, trainable, fixed):
        return model.stateless_call(trainable, fixed, x, training=False)[0]

    grad_fn, fwd_fn = jax.jit(gradient), jax.jit(forward)
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (batch, size, size, 3), jnp.float32)
    targets = jnp.arange(batch, dtype=jnp.int32) % 1000
    out: dict[str, Any] = {"model": name, "policy": policy, "batch": batch}
    started = time.perf_counter()
    grad_fn(x, targets, trainable, fixed).block_until_ready()
    out["compile_s"] = time.perf_counter() - started
    for label, call in (
        ("gradient", lambda: grad_fn(x, targets, trainable, fixed)),
        ("forward", lambda: fwd_fn(x, trainable, fixed)),
    ):
        call().block_until_ready()
        call().block_until_ready()
        started = time.perf_counter()
        for _ in range(calls):
            result = call()
        result.block_until_ready()
        seconds = (time.perf_counter() - started) / calls
        out[f"{label}_images_per_s"] = batch / seconds
    started = time.perf_counter()
    host = np.asarray(grad_fn(x, targets, trainable, fixed))  # with the copy to the host
    out["gradient_with_host_copy_images_per_s"] = batch / (time.perf_counter() - started)
    out["finite"] = bool(np.all(np.isfinite(host)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_anchor.json")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument(
        "--configs", nargs="*", default=None, help="MODEL:POLICY:BATCH ... (default: CONFIGS)"
    )
    args = parser.parse_args()
    configs = CONFIGS
    if args.configs:
        configs = tuple((m, p, int(b)) for m, p, b in (c.split(":") for c in args.configs))
    import jax

    info = {"devices": [str(d) for d in jax.devices()], "jax": jax.__version__}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,clocks.max.sm", "--format=csv"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    import keras

    info["keras"] = keras.__version__
    results = []
    for name, policy, batch in configs:
        try:
            results.append(measure(name, policy, batch, args.calls, args.size))
        except Exception as error:  # noqa: BLE001  keep the other configurations
            results.append({"model": name, "policy": policy, "batch": batch, "error": repr(error)})
        print(json.dumps(results[-1]), flush=True)
        with open(args.out, "w") as handle:  # after each one: a timeout keeps what ran
            json.dump({"info": info, "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
