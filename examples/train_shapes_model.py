"""Trains the small offline shapes classifier that the default (offline) run explains.

The model expects float inputs in [0, 1] (preprocessing mode "unit": pixels / 255); it holds
no rescaling layer. Its layers deliberately cover what the guided-backprop patcher must
handle: Conv2D(activation="relu"), a ReLU(max_value=6) layer, an Activation("swish")
layer, BatchNormalization, a residual Add, GlobalAveragePooling2D and a softmax Dense head.

Usage (about 5 minutes on 2 CPU cores)::

    python examples/train_shapes_model.py
    python examples/train_shapes_model.py --train 40000 --epochs 10 --seed 0
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_shapes_data import CLASS_NAMES, load_photos, make_dataset  # noqa: E402

EXAMPLES_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = EXAMPLES_DIR / "model" / "shapes_cnn.keras"
INPUT_SIZE = 64


def build_model(num_classes: int = len(CLASS_NAMES), *, input_size: int = INPUT_SIZE):
    """The shapes CNN (Keras functional API); inputs [B, S, S, 3] float in [0, 1]."""
    layers = keras.layers
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stem_conv")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="down1_conv")(x)
    x = layers.BatchNormalization(name="down1_bn")(x)
    x = layers.ReLU(max_value=6.0, name="down1_relu6")(x)
    shortcut = x
    y = layers.Conv2D(32, 3, padding="same", activation="relu", name="res_conv1")(x)
    y = layers.Conv2D(32, 3, padding="same", use_bias=False, name="res_conv2")(y)
    y = layers.BatchNormalization(name="res_bn")(y)
    x = layers.Add(name="res_add")([shortcut, y])
    x = layers.Activation("swish", name="res_swish")(x)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="down2_conv")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="head_conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="shapes_cnn")


def to_dataset(images: np.ndarray, labels: np.ndarray, *, batch_size: int, shuffle_seed=None):
    """uint8 images -> batches of float32 in [0, 1] (mode "unit"), labels int64."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    return ds.map(_unit_scale, num_parallel_calls=1).prefetch(2)


def _unit_scale(images, labels):
    return tf.cast(images, tf.float32) / 255.0, labels


def train(
    *,
    train_count: int,
    val_count: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> tuple[keras.Model, float, float]:
    """Trains from scratch; returns (model, held-out accuracy, training seconds)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    photos = load_photos()
    t0 = time.time()
    train_set = make_dataset(train_count, seed=seed, photos=photos)
    # Held-out: indices after the training range, so no sample is shared.
    val_set = make_dataset(val_count, seed=seed, start=train_count, photos=photos)
    print(f"generated {train_count} + {val_count} images in {time.time() - t0:.1f}s", flush=True)

    model = build_model()
    steps = epochs * -(-train_count // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    t1 = time.time()
    model.fit(
        to_dataset(train_set.images, train_set.labels, batch_size=batch_size, shuffle_seed=seed),
        validation_data=to_dataset(val_set.images, val_set.labels, batch_size=256),
        epochs=epochs,
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        verbose=2,
    )
    seconds = time.time() - t1
    probs = model.predict(to_dataset(val_set.images, val_set.labels, batch_size=256), verbose=0)
    accuracy = float(np.mean(np.argmax(probs, axis=1) == val_set.labels))
    return model, accuracy, seconds


def export(model: keras.Model, path: Path) -> keras.Model:
    """Saves a fresh, uncompiled copy (no optimizer state, so the file stays small)."""
    clean = build_model(model.output_shape[-1], input_size=model.input_shape[1])
    clean.set_weights(model.get_weights())
    path.parent.mkdir(parents=True, exist_ok=True)
    clean.save(path)
    return clean


def write_readme(path: Path, *, model, accuracy, args, seconds, model_bytes) -> None:
    """Writes examples/model/README.md with what was measured in this run."""
    classes = ", ".join(f"{i} {name}" for i, name in enumerate(CLASS_NAMES))
    text = f"""# shapes_cnn.keras: the small offline classifier

The default offline run (configs/local.yaml) explains this model, because ImageNet
weights cannot be downloaded there. It recognises ONE solid shape pasted on a photo.

| field | value |
| --- | --- |
| classes | {classes} |
| input | 64 x 64 x 3 RGB, float32 |
| preprocessing | `unit`: pixels / 255, i.e. inputs in [0, 1] (no rescaling layer in the model) |
| output | softmax over {len(CLASS_NAMES)} classes (the pipeline strips it to logits) |
| parameters | {model.count_params():,} |
| file size | {model_bytes:,} bytes (saved uncompiled, no optimizer state) |
| held-out accuracy | {accuracy:.4f} on {args.val:,} generated images not used in training |
| training | {args.train:,} images, {args.epochs} epochs, batch {args.batch_size}, Adam \
lr {args.learning_rate} cosine decay, seed {args.seed}, {seconds:.0f} s on CPU |

Layers (deliberately varied for the guided-backprop patcher): Conv2D(activation="relu"),
Conv2D + BatchNormalization + ReLU(max_value=6.0), a residual block ending in
Add + Activation("swish"), GlobalAveragePooling2D, Dense(activation="softmax").

## Reproduce

```
/work/venv/bin/python examples/train_shapes_model.py --train {args.train} --val {args.val} \\
    --epochs {args.epochs} --batch-size {args.batch_size} --seed {args.seed}
```

Training data comes from `examples/make_shapes_data.py` (deterministic per seed and sample
index): random crops of the photos in `examples/photos`, resized to 64 x 64, with one
randomly coloured, rotated, anti-aliased shape pasted at a random position and scale. The
generator also returns each shape's mask and bounding box. Results are seeded but may differ
in the last digits across TF versions and CPUs.

## Licence

The weights were trained only on synthetic images derived from the public-domain / CC0
photos listed in `examples/photos/LICENSES.md`; the model is distributed with the project.
"""
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=40000, help="training images")
    parser.add_argument("--val", type=int, default=3000, help="held-out images")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    for field in ("train", "val", "epochs", "batch_size"):
        if getattr(args, field) < 1:
            parser.error(f"--{field.replace('_', '-')}={getattr(args, field)} must be >= 1")
    model, accuracy, seconds = train(
        train_count=args.train,
        val_count=args.val,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    out = Path(args.out)
    clean = export(model, out)
    size = out.stat().st_size
    write_readme(
        out.parent / "README.md",
        model=clean,
        accuracy=accuracy,
        args=args,
        seconds=seconds,
        model_bytes=size,
    )
    print(
        f"held-out accuracy {accuracy:.4f}; params {clean.count_params()}; "
        f"saved {out} ({size} bytes); training {seconds:.0f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
