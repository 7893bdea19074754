"""Shared helpers of the image input tests (test_decode.py, test_sources.py): the example
photos shrunk and re-encoded, encoders and a short decode call."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.store.decode import decode_image

PHOTOS = Path(__file__).resolve().parents[2] / "examples" / "photos"
BIG = 10**8  # max_pixels that no test image reaches


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def decode(data: bytes, channels: int = 3, max_pixels: int = BIG) -> np.ndarray:
    return decode_image(data, channels=channels, max_pixels=max_pixels)


def random_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def small_photos() -> dict[str, bytes]:
    """The example photos, shrunk to 64x48 and re-encoded in their own format."""
    out = {}
    for path in sorted(PHOTOS.iterdir()):
        if path.suffix.lower() not in (".jpg", ".png"):
            continue
        img = Image.open(path).convert("RGB").resize((64, 48), Image.Resampling.BILINEAR)
        out[path.name] = encode(img, "JPEG" if path.suffix == ".jpg" else "PNG")
    assert len(out) == 6
    return out
