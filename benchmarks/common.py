"""Shared pieces of the benchmarks: timing, memory, machine facts, models, tables.

Nothing here imports the ``pipeline`` package, so the peer benchmark can run in another
virtual environment (a different TensorFlow) with only this file on its path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audit.metrics.correlation import spearman

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "examples" / "photos"


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo ("unknown" elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags(wanted: Sequence[str] = ("avx512f", "avx512_bf16", "amx_bf16", "avx2")) -> list[str]:
    """Which of the ``wanted`` CPU flags this machine has."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags = set(line.partition(":")[2].split())
                return [flag for flag in wanted if flag in flags]
    except OSError:
        pass
    return []


def versions() -> dict[str, str]:
    """Versions of the libraries that decide the numbers (those importable here)."""
    out = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "numpy", "apache_beam", "PIL"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        out[name] = str(getattr(module, "__version__", "?"))
    return out


def machine() -> dict[str, Any]:
    """Facts about the machine a run was measured on."""
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "flags": cpu_flags(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "versions": versions(),
    }


# --------------------------------------------------------------------------- memory


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(who).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- timing


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall seconds of each timed call of one contender, and images per call."""

    name: str
    seconds: tuple[float, ...]
    images: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def images_per_s(self) -> float:
        return self.images / self.median

    @property
    def spread(self) -> float:
        """(max - min) / median of the timed calls: how noisy the machine was."""
        return (max(self.seconds) - min(self.seconds)) / self.median


def interleaved(
    contenders: dict[str, tuple[Callable[[], Any], int]],
    *,
    rounds: int,
    warmup: int = 1,
    log: Callable[[str], None] | None = None,
) -> dict[str, Timing]:
    """Time each contender ``rounds`` times, round-robin, after ``warmup`` untimed calls.

    ``contenders`` maps a name to (a call that does the whole work and returns once its
    result is on the host, images per call). Interleaving spreads the noise of a shared
    machine over all contenders, so their ratios stay fair.
    """
    for name, (call, _) in contenders.items():
        for _ in range(warmup):
            start = time.perf_counter()
            call()
            if log:
                log(f"  warm-up {name}: {time.perf_counter() - start:.2f} s")
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (call, _) in contenders.items():
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)
    out = {}
    for name, (_, images) in contenders.items():
        out[name] = Timing(name, tuple(seconds[name]), images)
        if log:
            log(f"  {name}: {out[name].images_per_s:.3f} images/s (spread {out[name].spread:.0%})")
    return out


# --------------------------------------------------------------------------- images, models


def photo_batch(batch: int, size: int = 224) -> np.ndarray:
    """``batch`` bundled photos (cycled, every other one mirrored) as uint8 [B, S, S, 3]."""
    from PIL import Image

    paths = sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not paths:
        raise FileNotFoundError(f"no photos under {PHOTOS}")
    images = []
    for i in range(batch):
        with Image.open(paths[i % len(paths)]) as image:
            array = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR))
        if (i // len(paths)) % 2:
            array = array[:, ::-1]
        images.append(array)
    return np.stack(images).astype(np.uint8)


def random_weight_model(name: str, size: int = 224, *, keras_module: Any = None) -> Any:
    """keras.applications ``name`` with random weights and logits output (no softmax)."""
    if keras_module is None:
        import keras as keras_module
    constructor = getattr(keras_module.applications, name)
    return constructor(weights=None, input_shape=(size, size, 3), classifier_activation=None)


def calibrate_batchnorm(model: Any, x: Any) -> None:
    """Set every BatchNorm's moving statistics to those of ``x`` (one training-mode pass).

    A random-weight model keeps mean 0 / variance 1 statistics, which leaves activations
    badly scaled and gradients near 1e-13; calibrated, its maps have a realistic range,
    which matters when reduced-precision maps are compared with float32 ones.
    """
    layers = [layer for layer in _all_layers(model) if hasattr(layer, "moving_mean")]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(layers, saved, strict=True):
        layer.momentum = momentum


def _all_layers(model: Any) -> list[Any]:
    found = []
    for layer in model.layers:
        found.append(layer)
        if hasattr(layer, "layers"):
            found.extend(_all_layers(layer))
    return found


def symmetric(pixels: np.ndarray) -> np.ndarray:
    """MobileNet-style preprocessing: x / 127.5 - 1."""
    return (pixels.astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def caffe(pixels: np.ndarray) -> np.ndarray:
    """ResNet50-style preprocessing: RGB -> BGR, minus the ImageNet BGR mean."""
    bgr = pixels[..., ::-1].astype(np.float32)
    return (bgr - np.array([103.939, 116.779, 123.68], np.float32)).astype(np.float32)


def reference_gradient(model: Any) -> Callable[[Any, Any], Any]:
    """The plain reference: one ``tf.function`` for the gradient of each image's target
    logit with respect to a batch of images (the gradient any library starts from)."""
    import tensorflow as tf

    @tf.function
    def gradient(x: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(x)
            scores = tf.gather(model(x, training=False), targets, axis=1, batch_dims=1)
        return tape.gradient(scores, x)

    return gradient


# --------------------------------------------------------------------------- statistics


def map_rank_correlation(g1: np.ndarray, g2: np.ndarray) -> float:
    """Mean over images of the rank correlation of the |g|-summed-over-channels maps."""
    m1, m2 = np.abs(g1).sum(-1), np.abs(g2).sum(-1)
    return float(np.mean([spearman(a, b) for a, b in zip(m1, m2, strict=True)]))


# --------------------------------------------------------------------------- output


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def log(message: str) -> None:
    """Progress to stderr, so stdout holds only the tables (or JSON)."""
    print(message, file=sys.stderr, flush=True)


def dump_json(data: Any, path: str | None) -> None:
    """Write ``data`` as JSON to ``path`` ("-" for stdout); nothing when path is None."""
    if path is None:
        return
    text = json.dumps(data, indent=2, sort_keys=True, default=str)
    if path == "-":
        print(text)
    else:
        Path(path).write_text(text + "\n")
