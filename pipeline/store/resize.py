"""Resizing to the model input, and the box of the original it resamples from (shared by
the decoder and the audit's annotation boxes)."""

import numpy as np
from PIL import Image

from pipeline.choices import RESIZE_POLICIES


def check_resize_args(pixels: np.ndarray, size: tuple[int, int], policy: str) -> None:
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize policy {policy!r} is unknown: use one of {RESIZE_POLICIES}")
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ValueError(f"size={size!r} must be (height, width), two positive ints")
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        raise TypeError("pixels must be a uint8 numpy array [H, W, C]")
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3) or 0 in pixels.shape[:2]:
        raise ValueError(f"pixels of shape {pixels.shape} must be [H, W, C] with C 1 or 3")


def source_box(
    original: tuple[int, int], size: tuple[int, int], policy: str
) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the original image, in its pixel coordinates, that
    :func:`resize` maps onto the whole (height, width) ``size``: the full image for
    "resize", the centred box of the target's aspect ratio for "center_crop". The audit maps
    annotation boxes through the same box."""
    height, width = float(original[0]), float(original[1])
    out_h, out_w = float(size[0]), float(size[1])
    if policy == "resize":
        return 0.0, 0.0, width, height
    scale = max(out_h / height, out_w / width)
    box_w, box_h = out_w / scale, out_h / scale
    left, top = (width - box_w) / 2.0, (height - box_h) / 2.0
    return left, top, left + box_w, top + box_h


def resize(pixels: np.ndarray, size: tuple[int, int], policy: str) -> np.ndarray:
    """Resize uint8 [H, W, C] pixels to ``size`` = (height, width); returns uint8.

    Policies (Pillow bilinear, antialiased when shrinking, half-pixel centres):
      "resize":      stretch to ``size``; the aspect ratio is not kept.
      "center_crop": scale so the image covers ``size`` (for a square target: the shorter
                     side becomes the target's) and take the centre; resampled in one
                     step from the matching centre box of the original.
    """
    check_resize_args(pixels, size, policy)
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    out_h, out_w = int(size[0]), int(size[1])
    gray = pixels.shape[-1] == 1
    img = Image.fromarray(pixels[..., 0] if gray else pixels, mode="L" if gray else "RGB")
    box = source_box((height, width), (out_h, out_w), policy)
    out = np.asarray(img.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box))
    return np.ascontiguousarray(out[..., None] if gray else out)


def normalised_boxes(boxes) -> tuple[tuple[float, float, float, float], ...]:
    """Ground-truth boxes as records and ImageItems carry them: (ymin, xmin, ymax, xmax)
    fractions of the original image, from any [N, 4] sequence (TFDS ``objects/bbox``, the
    TF object-detection ``image/object/bbox/*`` features zipped)."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return ()
    array = array.reshape(-1, 4) if array.ndim == 1 and array.size % 4 == 0 else array
    ok = array.ndim == 2 and array.shape[1] == 4 and np.all(np.isfinite(array))
    if (
        not ok
        or np.any(array < -1e-6)
        or np.any(array > 1 + 1e-6)
        or np.any(array[:, 2:] < array[:, :2])
    ):
        raise ValueError(
            f"boxes {np.asarray(boxes).tolist()[:4]}: each box is (ymin, xmin, ymax, xmax), "
            "fractions of the image in [0, 1] with min <= max (TFDS objects/bbox order)"
        )
    return tuple(tuple(float(v) for v in np.clip(box, 0.0, 1.0)) for box in array)
