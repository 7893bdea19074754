"""Train keras.applications.ResNet50 on the synthetic shapes task, for the precision benchmark.

ImageNet weights cannot be downloaded on the benchmark machine, and a random-weight
ResNet50's saliency maps are chaotic (float32 against its own input rounded to bfloat16
rank-correlates at ~0.57), so "do reduced-precision maps agree with float32 on ResNet50?"
needs a trained ResNet50. This trains the unchanged architecture (weights=None, 5 logits)
on the generator of examples/make_shapes_data.py at 64 x 64 with caffe preprocessing,
ResNet50's own, and saves it where ``benchmarks.bench`` looks for it (94 MB, not committed).

    python -m benchmarks.train_resnet50 [--train 24000 --epochs 4]   # ~20 min, 2 cores
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from benchmarks import common

DEFAULT_PATH = common.ROOT / ".bench" / "resnet50_shapes_64.keras"
SIZE = 64
SEED = 0


def shapes(count: int, *, start: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` shapes images (uint8) and labels from the examples' generator."""
    spec = importlib.util.spec_from_file_location(  # examples/ is scripts, not a package
        "make_shapes_data", common.ROOT / "examples" / "make_shapes_data.py"
    )
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    data = generator.make_dataset(count, seed=SEED, size=SIZE, start=start)
    return data.images, data.labels


def held_out(count: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Images after every training index: never trained on (the first 1,000,000 reserved)."""
    return shapes(count, start=1_000_000)


def _resnet50():
    import keras

    return keras.applications.ResNet50(
        weights=None, input_shape=(SIZE, SIZE, 3), classes=5, classifier_activation=None
    )


def train(*, train_count: int, epochs: int, batch_size: int, out: Path) -> dict:
    """Train from scratch and save; returns what was measured."""
    import keras

    keras.utils.set_random_seed(SEED)
    images, labels = shapes(train_count, start=0)
    # Trained in mixed_bfloat16 (about 1.6x faster on this CPU), saved in float32 below.
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = _resnet50()
    steps = epochs * -(-train_count // batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    started = time.time()
    model.fit(
        common.caffe(images), labels, batch_size=batch_size, epochs=epochs, verbose=2, shuffle=True
    )
    seconds = time.time() - started
    keras.mixed_precision.set_global_policy("float32")
    exported = _resnet50()
    exported.set_weights(model.get_weights())
    # BatchNorm's moving averages lag weights that changed fast: reset them to the
    # statistics of one large training batch.
    common.calibrate_batchnorm(exported, common.caffe(images[:512]))
    x, y = held_out(512)
    accuracy = float(np.mean(np.argmax(exported.predict(common.caffe(x), verbose=0), 1) == y))
    out.parent.mkdir(parents=True, exist_ok=True)
    exported.save(out)
    facts = {
        "path": str(out),
        "train_images": train_count,
        "epochs": epochs,
        "seconds": round(seconds, 1),
        "held_out_accuracy": accuracy,
    }
    out.with_suffix(".json").write_text(json.dumps(facts, indent=2) + "\n")
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=24000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default=str(DEFAULT_PATH))
    args = parser.parse_args(argv)
    facts = train(
        train_count=args.train, epochs=args.epochs, batch_size=args.batch_size, out=Path(args.out)
    )
    print(json.dumps(facts, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
