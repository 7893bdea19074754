"""benchmarks.pipeline_bench's workload: a folder of images and the config that runs it."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks import common


def make_workspace(root: Path, *, images: int, size: int) -> dict[str, Path]:
    """Model file and N image copies under ``root``."""
    import keras

    root.mkdir(parents=True, exist_ok=True)
    model_path = root / f"mobilenetv2_{size}.keras"
    if not model_path.exists():
        model = common.random_weight_model("MobileNetV2", size)
        common.calibrate_batchnorm(model, common.symmetric(common.photo_batch(16, size)))
        keras.saving.save_model(model, model_path)
    photos = sorted(p for p in common.PHOTOS.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    image_dir = root / f"images_{images}"
    if not image_dir.exists():
        image_dir.mkdir()
        for i in range(images):
            source = photos[i % len(photos)]
            shutil.copyfile(source, image_dir / f"{i:05d}_{source.name}")
    return {"model": model_path, "images": image_dir}


def write_config(
    path: Path, *, model: Path, images: Path, out: Path, method: str, batch: int
) -> Path:
    """The pipeline config of a benchmark run."""
    text = f"""
model:
  name: {model}
  preprocessing: symmetric
source:
  kind: files
  pattern: {images}/*
  resize: resize
saliency:
  methods: [{method}]
  target: predicted
  samples: 50
  noise: 0.2
  precision: float32
  sample_batch_size: 64
batch:
  max_batch_size: {batch}
  min_batch_size: {batch}
output:
  dir: {out}
  views: [heatmap, overlay, grid]
run:
  progress_every: 100000
"""
    path.write_text(text)
    return path
