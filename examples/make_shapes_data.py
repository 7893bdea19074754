"""Synthetic "one shape on a photo" data for the small classifier the product ships.

Each sample is a random crop of one of the real photos in ``examples/photos`` (public
domain / CC0, see ``examples/photos/LICENSES.md``), resized to ``size x size``, with ONE
solid, randomly coloured shape pasted at a random position, scale and rotation. The
shape's anti-aliased coverage mask and its bounding box come with the image, so the
location of the evidence is known exactly (what saliency sanity checks need).

Everything is deterministic: sample ``i`` of seed ``s`` depends only on ``(s, i)`` and the
photos, never on how many samples are drawn around it.

CLI::

    python examples/make_shapes_data.py bundle --out examples/images
    python examples/make_shapes_data.py dataset --out /tmp/shapes.npz --count 1000
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star")
DEFAULT_PHOTO_DIR = Path(__file__).resolve().parent / "photos"
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")

# Shape radius (centre to farthest point) as a fraction of the image side.
RADIUS_RANGE = (0.14, 0.32)
# Background crop side as a fraction of the photo's shorter side.
CROP_RANGE = (0.25, 1.0)
# Minimum RGB distance (0..441) between the shape colour and the background under it.
MIN_COLOUR_DISTANCE = 120.0
SUPERSAMPLE = 4
# Photos are cached at most this big (shorter side); crops are then cheap to resize.
PHOTO_CACHE_SIDE = 320


@dataclass(frozen=True)
class ShapeSample:
    """One generated image and where its evidence is."""

    image: np.ndarray  # uint8 [S, S, 3]
    label: int  # index into CLASS_NAMES
    box: tuple[int, int, int, int]  # (y0, x0, y1, x1) in pixels, end exclusive
    mask: np.ndarray  # float32 [S, S], shape coverage in [0, 1]


@dataclass(frozen=True)
class ShapeDataset:
    """A batch of samples stacked into arrays."""

    images: np.ndarray  # uint8 [N, S, S, 3]
    labels: np.ndarray  # int64 [N]
    boxes: np.ndarray  # int32 [N, 4], (y0, x0, y1, x1), end exclusive
    masks: np.ndarray | None  # float32 [N, S, S] when requested, else None


def load_photos(photo_dir: str | Path = DEFAULT_PHOTO_DIR) -> tuple[np.ndarray, ...]:
    """Loads the background photos (RGB uint8), sorted by file name, shrunk for speed."""
    directory = Path(photo_dir)
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise ValueError(
            f"photo_dir={str(directory)!r} holds no {'/'.join(PHOTO_SUFFIXES)} files; "
            "point it at a folder of RGB photos (the repo ships examples/photos)"
        )
    photos = []
    for path in files:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            scale = PHOTO_CACHE_SIDE / min(rgb.size)
            if scale < 1.0:
                new_size = (round(rgb.width * scale), round(rgb.height * scale))
                rgb = rgb.resize(new_size, Image.Resampling.LANCZOS)
            photos.append(np.asarray(rgb, dtype=np.uint8))
    return tuple(photos)


def shape_polygon(label: int, *, center: tuple[float, float], radius: float, angle: float):
    """Vertices (x, y) of a polygonal shape, or None for the circle."""
    if label == 0:
        return None
    if label == 1:  # square, circumradius 1
        unit = [(math.cos(a), math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]
    elif label == 2:  # equilateral triangle, circumradius 1
        unit = [(math.cos(a), math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3]
    elif label == 3:  # plus sign: arms of half-width w reaching 1 along each axis
        w = 0.3
        unit = [
            (w, w), (1, w), (1, -w), (w, -w), (w, -1), (-w, -1),
            (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1), (w, 1),
        ]  # fmt: skip
    elif label == 4:  # five-pointed star, inner radius 0.45
        radii = [1.0 if k % 2 == 0 else 0.45 for k in range(10)]
        angles = [k * math.pi / 5 - math.pi / 2 for k in range(10)]
        unit = [(r * math.cos(a), r * math.sin(a)) for r, a in zip(radii, angles)]
    else:
        raise ValueError(f"label={label!r} is not a class index; use 0..{len(CLASS_NAMES) - 1}")
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    cx, cy = center
    return [
        (cx + radius * (x * cos_a - y * sin_a), cy + radius * (x * sin_a + y * cos_a))
        for x, y in unit
    ]


def shape_mask(
    label: int,
    *,
    size: int,
    center: tuple[float, float],
    radius: float,
    angle: float,
) -> np.ndarray:
    """Anti-aliased coverage mask float32 [size, size] in [0, 1] (supersampled polygon)."""
    ss = SUPERSAMPLE
    canvas = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(canvas)
    polygon = shape_polygon(label, center=center, radius=radius, angle=angle)
    if polygon is None:
        r = 0.85 * radius  # a circle of the same visual weight as the polygons
        cx, cy = center
        draw.ellipse([(cx - r) * ss, (cy - r) * ss, (cx + r) * ss, (cy + r) * ss], fill=255)
    else:
        draw.polygon([(x * ss, y * ss) for x, y in polygon], fill=255)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def random_background(rng: np.random.Generator, photos: Sequence[np.ndarray], size: int):
    """A random square crop of a random photo, maybe mirrored, resized to size x size."""
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    side = max(8, int(round(min(h, w) * rng.uniform(*CROP_RANGE))))
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[y0 : y0 + side, x0 : x0 + side])
    crop = crop.resize((size, size), Image.Resampling.BILINEAR)
    out = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return out


def contrasting_colour(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """A random RGB colour at least MIN_COLOUR_DISTANCE from the background (best of 32)."""
    best, best_distance = None, -1.0
    for _ in range(32):
        colour = rng.uniform(0.0, 255.0, size=3)
        distance = float(np.linalg.norm(colour - background_mean))
        if distance > best_distance:
            best, best_distance = colour, distance
        if distance >= MIN_COLOUR_DISTANCE:
            break
    return best


def make_sample(
    rng: np.random.Generator,
    photos: Sequence[np.ndarray],
    *,
    size: int = 64,
    label: int | None = None,
) -> ShapeSample:
    """Draws one sample: photo crop + one shape of class ``label`` (random when None)."""
    if size < 16:
        raise ValueError(f"size={size!r} is too small to draw a shape; use 16 or more (e.g. 64)")
    if label is None:
        label = int(rng.integers(len(CLASS_NAMES)))
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label={label!r} is not a class index; use 0..{len(CLASS_NAMES) - 1}")
    background = random_background(rng, photos, size)
    radius = float(rng.uniform(*RADIUS_RANGE)) * size
    margin = 1.05 * radius + 1.0  # the plus sign's corners reach 1.04 radii
    cx, cy = rng.uniform(margin, size - margin, size=2)
    angle = float(rng.uniform(0.0, 2 * math.pi))
    mask = shape_mask(label, size=size, center=(cx, cy), radius=radius, angle=angle)
    weights = mask / max(float(mask.sum()), 1e-6)
    colour = contrasting_colour(rng, np.einsum("hw,hwc->c", weights, background))
    alpha = mask[..., None]
    image = background * (1.0 - alpha) + colour * alpha
    ys, xs = np.nonzero(mask > 0)
    box = (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)
    return ShapeSample(
        image=np.clip(np.rint(image), 0, 255).astype(np.uint8), label=label, box=box, mask=mask
    )


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for sample ``index`` of ``seed`` (independent of the dataset size)."""
    return np.random.default_rng([int(seed), int(index)])


def make_dataset(
    count: int,
    *,
    seed: int,
    size: int = 64,
    start: int = 0,
    photos: Sequence[np.ndarray] | None = None,
    with_masks: bool = False,
) -> ShapeDataset:
    """Samples ``start .. start+count-1`` of ``seed``; labels cycle through the classes.

    Disjoint index ranges of one seed give disjoint samples (train vs held-out split).
    """
    if count < 1:
        raise ValueError(f"count={count!r} must be a positive number of samples")
    if start < 0:
        raise ValueError(f"start={start!r} must be >= 0 (the first sample index)")
    photos = load_photos() if photos is None else photos
    images = np.empty((count, size, size, 3), np.uint8)
    labels = np.empty((count,), np.int64)
    boxes = np.empty((count, 4), np.int32)
    masks = np.empty((count, size, size), np.float32) if with_masks else None
    for i in range(count):
        index = start + i
        sample = make_sample(
            sample_rng(seed, index), photos, size=size, label=index % len(CLASS_NAMES)
        )
        images[i], labels[i], boxes[i] = sample.image, sample.label, sample.box
        if masks is not None:
            masks[i] = sample.mask
    return ShapeDataset(images=images, labels=labels, boxes=boxes, masks=masks)


def write_bundle(
    out_dir: str | Path,
    *,
    seed: int = 2024,
    size: int = 192,
    per_class: int = 2,
    extra: int = 2,
    photos: Sequence[np.ndarray] | None = None,
) -> list[dict]:
    """Writes the bundled example images (JPEG and PNG alternate) and annotations.json.

    Returns the annotation rows: file, label, class name, box (y0, x0, y1, x1), size, seed,
    index (``make_sample(sample_rng(seed, index), photos, size=size, label=label)``).
    """
    photos = load_photos() if photos is None else photos
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = per_class * len(CLASS_NAMES) + extra
    counters = [0] * len(CLASS_NAMES)
    rows = []
    for index in range(total):
        label = index % len(CLASS_NAMES)
        sample = make_sample(sample_rng(seed, index), photos, size=size, label=label)
        counters[label] += 1
        n = counters[label]
        suffix = "jpg" if n % 2 == 1 else "png"
        name = f"{CLASS_NAMES[label]}_{n:02d}.{suffix}"
        im = Image.fromarray(sample.image)
        if suffix == "jpg":
            im.save(out / name, quality=92)
        else:
            im.save(out / name)
        rows.append(
            {
                "file": name,
                "label": label,
                "class_name": CLASS_NAMES[label],
                "box": list(sample.box),
                "size": size,
                "seed": seed,
                "index": index,
            }
        )
    (out / "annotations.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``bundle`` writes example images, ``dataset`` writes an .npz of samples."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bundle = sub.add_parser("bundle", help="write the bundled example images")
    bundle.add_argument("--out", default=str(Path(__file__).resolve().parent / "images"))
    bundle.add_argument("--seed", type=int, default=2024)
    bundle.add_argument("--size", type=int, default=192)
    bundle.add_argument("--per-class", type=int, default=2)
    bundle.add_argument("--extra", type=int, default=2)
    data = sub.add_parser("dataset", help="write images, labels, boxes (and masks) to .npz")
    data.add_argument("--out", required=True)
    data.add_argument("--count", type=int, default=1000)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--size", type=int, default=64)
    data.add_argument("--start", type=int, default=0)
    data.add_argument("--masks", action="store_true")
    for p in (bundle, data):
        p.add_argument("--photos", default=str(DEFAULT_PHOTO_DIR))
    args = parser.parse_args(argv)
    photos = load_photos(args.photos)
    if args.command == "bundle":
        rows = write_bundle(
            args.out,
            seed=args.seed,
            size=args.size,
            per_class=args.per_class,
            extra=args.extra,
            photos=photos,
        )
        print(f"wrote {len(rows)} images to {args.out}")
        return 0
    ds = make_dataset(
        args.count,
        seed=args.seed,
        size=args.size,
        start=args.start,
        photos=photos,
        with_masks=args.masks,
    )
    arrays = {"images": ds.images, "labels": ds.labels, "boxes": ds.boxes}
    if ds.masks is not None:
        arrays["masks"] = ds.masks
    np.savez_compressed(args.out, class_names=np.array(CLASS_NAMES), **arrays)
    print(f"wrote {args.count} samples to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
