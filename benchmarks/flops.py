"""FLOPs per saliency map, counted from the model itself, and what a GPU should reach.

    python -m benchmarks.flops            # the table in RESULTS.md

Forward multiply-accumulates (MACs) are summed over Conv2D / DepthwiseConv2D /
SeparableConv2D / Dense layers from their output shapes (1 MAC = 2 FLOPs; batch norm,
activations, pooling and adds are left out: < 2% here and memory-bound anyway). The cost
of a map, in forward passes:

- vanilla / guided: forward + backward to the input. The backward computes only the input
  gradients (no weight gradients: they are pruned, the variables are not watched), about
  one forward, so ~2 forward; 3 forward would be a training step (weights too). The
  first layer's input gradient is needed here, unlike in training, which adds little.
- SmoothGrad N: N such passes (plus one clean forward for the scores): ~2N + 1.
- integrated gradients with S steps: ~2S + 1.

Two estimates per GPU, at mixed_float16:

- ceiling: dense fp16 tensor-core peak x ``--utilisation`` (35%) / FLOPs per map;
- expected: scaled from what benchmarks/gpu_anchor.py measured on an H100 (Keras 3 on JAX,
  XLA, batch 128, mixed_float16): by the fp16 peak for the compute-bound ResNet50 (the H100
  ran it at 14% of its peak), by memory bandwidth for the depthwise-heavy, memory-bound
  MobileNetV2 (2% of the H100's peak FLOP/s).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


from benchmarks import common

# Dense fp16 tensor-core peak TFLOP/s (vendor data sheets, no structured sparsity) and
# memory bandwidth (GB/s), which bounds the depthwise / elementwise-heavy MobileNetV2.
GPUS = {
    "T4": {"fp16_tflops": 65.0, "bandwidth_gbs": 320.0},
    "L4": {"fp16_tflops": 121.0, "bandwidth_gbs": 300.0},
    "A100": {"fp16_tflops": 312.0, "bandwidth_gbs": 1555.0},  # the 40 GB card
}
# benchmarks/gpu_anchor.py on one H100 80GB HBM3 (SXM: 989 dense fp16 TFLOP/s, 3350 GB/s),
# 2026-11-27: vanilla input-gradient images/s at mixed_float16, batch 128, and what bounds it.
H100 = {"fp16_tflops": 989.0, "bandwidth_gbs": 3350.0}
H100_VANILLA = {"ResNet50": (9244.0, "fp16_tflops"), "MobileNetV2": (18284.0, "bandwidth_gbs")}
# Forward passes per map (see the module docstring).
PASSES = {
    "vanilla": 2.0,
    "guided": 2.0,
    "smoothgrad N=50": 2.0 * 50 + 1,
    "integrated_gradients S=32": 2.0 * 32 + 1,
}


def forward_macs(model: Any) -> int:
    """Multiply-accumulates of one image's forward pass."""
    import keras

    total = 0
    for layer in common._all_layers(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            total += h * w * c * kh * kw
        elif isinstance(layer, keras.layers.SeparableConv2D):
            _, h, w, cout = layer.output.shape
            cin = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            total += h * w * cin * kh * kw * layer.depth_multiplier + h * w * cin * cout
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, cout = layer.output.shape
            cin = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            total += h * w * cout * kh * kw * cin // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            total += int(layer.input.shape[-1]) * int(layer.units)
    return int(total)


def estimate(
    models: tuple[str, ...] = ("ResNet50", "MobileNetV2"), *, utilisation: float = 0.35
) -> dict[str, Any]:
    """FLOPs per map and expected images/s per GPU; a JSON-ready dict."""
    out: dict[str, Any] = {"utilisation": utilisation, "gpus": GPUS, "models": {}}
    for name in models:
        model = common.random_weight_model(name, 224)
        macs = forward_macs(model)
        flops = 2 * macs
        per_method = {}
        anchor, bound = H100_VANILLA.get(name, (None, "fp16_tflops"))
        for method, passes in PASSES.items():
            per_map = flops * passes
            per_method[method] = {
                "gflops_per_map": per_map / 1e9,
                "images_per_s": {
                    gpu: spec["fp16_tflops"] * 1e12 * utilisation / per_map
                    for gpu, spec in GPUS.items()
                },
                "expected_images_per_s": {
                    gpu: anchor * spec[bound] / H100[bound] * PASSES["vanilla"] / passes
                    for gpu, spec in GPUS.items()
                }
                if anchor
                else {},
            }
        out["models"][name] = {"forward_gmacs": macs / 1e9, "methods": per_method}
    return out


def _rate(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def table(result: dict[str, Any]) -> str:
    """Markdown table of ``estimate``'s result: expected (ceiling) images/s per GPU."""
    rows = []
    for name, data in result["models"].items():
        for method, m in data["methods"].items():
            ceiling, expected = m["images_per_s"], m["expected_images_per_s"]
            rows.append(
                [
                    name,
                    f"{data['forward_gmacs']:.2f} GMAC",
                    method,
                    f"{m['gflops_per_map']:.1f}",
                    *(f"{_rate(expected.get(g))} ({_rate(ceiling[g])})" for g in GPUS),
                ]
            )
    header = ["model", "forward / image", "method", "GFLOPs / map"]
    header += [f"{g} images/s" for g in GPUS]
    return common.markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utilisation", type=float, default=0.35)
    args = parser.parse_args(argv)
    result = estimate(utilisation=args.utilisation)
    print(
        "Expected images/s at mixed_float16, scaled from the H100 measurement (in brackets: "
        f"the ceiling at {args.utilisation:.0%} of the dense fp16 tensor-core peak; T4 65, "
        "L4 121, A100 312 TFLOP/s):\n"
    )
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
