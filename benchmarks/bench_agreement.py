"""benchmarks.bench's precision section, its agreement part: do float32 and reduced-precision
maps of trained models rank pixels alike (the trained ResNet50, the bundled example)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.bench_report import SAMPLES


def trained_resnet50_agreement(path: Path) -> dict[str, Any] | None:
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


def trained_example_agreement() -> dict[str, float]:
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
