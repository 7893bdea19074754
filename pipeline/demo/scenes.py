"""Realistic shortcut scenes: objects on natural photo crops, with planted shortcuts.

Each image is a random crop of a real photo (``examples/photos`` and the photos that
scikit-image's wheel ships) resized to ``size``, with one
object of its class (a disc, square, triangle, cross, ring or bar) of random colour, size
(18-40% of the side) and place (anywhere, corners included). Shortcuts are planted in one
class each (:class:`Plant`):

- ``tag``: a semi-transparent mark (``design``: a thin ruler, a short text stamp, a small
  logo) at a random place, in ``share`` of the class's images;
- ``stamp``: the same marks, fixed in one corner;
- ``frame``: a thin coloured frame around the image;
- ``background``: every image of the class on crops of one photo no other class uses.

In a planted image the object is another class's (so the shortcut is what says the class,
and a model must learn it), except for ``background``, where half the images keep their
own object. Marks are 8-20 px at 96 px and proportionally larger at other sizes, of
opacity 0.5-0.9. Everything is seeded: scene ``i`` of a seed is always the same.

Plain numpy and Pillow; used by the tests, benchmarks/shortcut_suite.py and the demo.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage import data as skimage_data

PHOTO_DIR = Path(__file__).resolve().parents[2] / "examples" / "photos"
PHOTO_SIDE = 256  # photos are cached at this shorter side
SHAPES = ("disc", "square", "triangle", "cross", "ring", "bar")
KINDS = ("tag", "stamp", "frame", "background")
DESIGNS = ("ruler", "text", "logo")
OBJECT_RANGE = (0.18, 0.40)  # object side / image side
MARK_RANGE = (8 / 96, 20 / 96)  # mark side / image side
OPACITY_RANGE = (0.5, 0.9)
FRAME_WIDTH = 3 / 96  # the frame's width / image side (3 px at 96, 7 at 224)
SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "coffee", "chelsea", "grass", "gravel",
                  "rocket", "coins", "page", "moon", "text", "cell")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Plant:
    """A shortcut planted in class ``cls`` (see the module docstring)."""

    kind: str
    cls: int
    design: str = "ruler"
    share: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Plant.kind: got {self.kind!r}; allowed: {list(KINDS)}.")
        if self.design not in DESIGNS:
            raise ValueError(f"Plant.design: got {self.design!r}; allowed: {list(DESIGNS)}.")
        if not 0 < self.share <= 1:
            raise ValueError(f"Plant.share: got {self.share!r}; a fraction in (0, 1].")


@dataclasses.dataclass(frozen=True)
class Scenes:
    """Images uint8 [N, S, S, 3], labels [N], object boxes [N, 4] (ymin, xmin, ymax, xmax
    in pixels, end exclusive), and per plant (index into ``plants``) the planted images'
    mask [N] bool and the mark's box [N, 4] (-1 where none; the frame: the whole image)."""

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    plants: tuple[Plant, ...]
    planted: np.ndarray  # [len(plants), N] bool
    mark_boxes: np.ndarray  # [len(plants), N, 4]


def load_photos() -> list[np.ndarray]:
    """The background photos, RGB uint8, each at most PHOTO_SIDE on its shorter side."""
    photos = []
    for path in sorted(PHOTO_DIR.glob("*")):
        if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            with Image.open(path) as im:
                photos.append(_shrunk(im.convert("RGB")))
    for name in SKIMAGE_PHOTOS:  # the photos scikit-image's wheel ships
        pixels = np.asarray(getattr(skimage_data, name)())
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[..., None], 3, axis=-1)
        photos.append(_shrunk(Image.fromarray(pixels[..., :3].astype(np.uint8))))
    return photos


def _shrunk(im: Image.Image) -> np.ndarray:
    scale = PHOTO_SIDE / min(im.size)
    if scale < 1:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BILINEAR)
    return np.asarray(im, np.uint8)


def _crop(rng, photo: np.ndarray, size: int) -> Image.Image:
    h, w = photo.shape[:2]
    side = max(16, int(min(h, w) * rng.uniform(0.3, 1.0)))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.BILINEAR)
    return crop.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop


def _colour(rng) -> tuple[int, int, int]:
    hue = rng.uniform(0, 1)
    rgb = [0.5 + 0.5 * math.cos(2 * math.pi * (hue - k / 3)) for k in range(3)]
    return tuple(int(40 + 215 * c) for c in rgb)


def _draw_object(draw: ImageDraw.ImageDraw, shape: str, box, colour) -> None:
    y0, x0, y1, x1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "disc":
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=colour)
    elif shape == "square":
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=colour)
    elif shape == "cross":
        t = max(1, r / 3)
        draw.rectangle([cx - t, y0, cx + t, y1 - 1], fill=colour)
        draw.rectangle([x0, cy - t, x1 - 1, cy + t], fill=colour)
    elif shape == "ring":
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], outline=colour, width=max(2, int(r / 3)))
    else:  # bar: a diagonal thick line
        draw.line([(x0, y1 - 1), (x1 - 1, y0)], fill=colour, width=max(2, int(r / 2)))


def mark_patch(design: str, side: int) -> np.ndarray:
    """A mark as RGBA float [side, side, 4] in [0, 1] (alpha: its coverage)."""
    im = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(im)
    if design == "ruler":  # a light bar with dark ticks
        h = max(3, side // 3)
        y = (side - h) // 2
        draw.rectangle([0, y, side - 1, y + h - 1], fill=(250, 230, 80, 255))
        for x in range(1, side - 1, max(2, side // 6)):
            draw.line([(x, y), (x, y + h // 2 + (x % 2))], fill=(20, 20, 20, 255), width=1)
    elif design == "text":  # a short stamp: white letters on a dark label
        draw.rectangle([0, side // 5, side - 1, side - side // 5], fill=(30, 30, 160, 255))
        font = ImageFont.load_default(size=max(6, int(side * 0.45)))
        draw.text((side / 2, side / 2), "ID", fill=(255, 255, 255, 255), anchor="mm", font=font)
    else:  # logo: a red disc, a white ring, a dark centre
        draw.ellipse([0, 0, side - 1, side - 1], fill=(220, 30, 40, 255))
        k = max(1, side // 5)
        draw.ellipse([k, k, side - 1 - k, side - 1 - k], outline=(255, 255, 255, 255),
                     width=max(1, side // 8))  # fmt: skip
        c = side // 2
        draw.ellipse([c - k // 2 - 1, c - k // 2 - 1, c + k // 2, c + k // 2], fill=(0, 0, 0, 255))
    return np.asarray(im, np.float32) / 255.0


def _blend(image: np.ndarray, patch: np.ndarray, y: int, x: int, opacity: float) -> None:
    h, w = patch.shape[:2]
    alpha = patch[..., 3:] * opacity
    region = image[y : y + h, x : x + w]
    image[y : y + h, x : x + w] = region * (1 - alpha) + patch[..., :3] * 255 * alpha


def make_scenes(
    seed: int,
    *,
    size: int = 96,
    classes: int = 4,
    per_class: int = 150,
    plants: tuple[Plant, ...] = (),
    photos: list[np.ndarray] | None = None,
) -> Scenes:
    """The scenes of one seed (see the module docstring)."""
    if not 2 <= classes <= len(SHAPES):
        raise ValueError(f"classes: got {classes!r}; 2..{len(SHAPES)} are drawn.")
    for p in plants:
        if not 0 <= p.cls < classes:
            raise ValueError(f"Plant.cls: got {p.cls}; a class in [0, {classes}).")
    rng = np.random.default_rng(seed)
    photos = photos if photos is not None else load_photos()
    shared = {p.cls: len(photos) - 1 - i for i, p in enumerate(plants) if p.kind == "background"}
    others = [i for i in range(len(photos)) if i not in shared.values()]
    n = classes * per_class
    images = np.zeros((n, size, size, 3), np.uint8)
    labels = np.repeat(np.arange(classes), per_class)
    boxes = np.zeros((n, 4), np.int32)
    planted = np.zeros((len(plants), n), bool)
    mark_boxes = np.full((len(plants), n, 4), -1, np.int32)
    # each plant's design details fixed per seed: one mark, one frame colour, one corner
    corner = {i: int(rng.integers(4)) for i in range(len(plants))}
    frame_colour = {i: _colour(rng) for i in range(len(plants))}
    for i in range(n):
        label = int(labels[i])
        mine = [(j, p) for j, p in enumerate(plants) if p.cls == label]
        active = [(j, p) for j, p in mine if rng.random() < p.share or p.kind == "background"]
        source = shared.get(label) if any(p.kind == "background" for _, p in mine) else None
        photo = photos[source if source is not None else others[int(rng.integers(len(others)))]]
        canvas = _crop(rng, photo, size)
        shape = label
        marked = any(p.kind != "background" for _, p in active)
        # the shortcut says the class: the object is another class's (in half of a shared
        # background's class)
        if marked or (source is not None and rng.random() < 0.5):
            shape = int((label + rng.integers(1, classes)) % classes)
        side = int(size * rng.uniform(*OBJECT_RANGE))
        y0, x0 = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
        boxes[i] = (y0, x0, y0 + side, x0 + side)
        _draw_object(ImageDraw.Draw(canvas), SHAPES[shape], boxes[i], _colour(rng))
        image = np.asarray(canvas, np.float32).copy()
        for j, p in active:
            planted[j, i] = True
            if p.kind == "frame":
                width = max(1, round(FRAME_WIDTH * size))
                band = np.ones((size, size), bool)
                band[width:-width, width:-width] = False
                opacity = rng.uniform(*OPACITY_RANGE)
                image[band] = image[band] * (1 - opacity) + np.array(frame_colour[j]) * opacity
                mark_boxes[j, i] = (0, 0, size, size)
            elif p.kind in ("tag", "stamp"):
                m = int(round(size * rng.uniform(*MARK_RANGE)))
                patch = mark_patch(p.design, m)
                if p.kind == "stamp":
                    pad = max(1, size // 48)
                    y = pad if corner[j] < 2 else size - m - pad
                    x = pad if corner[j] % 2 == 0 else size - m - pad
                else:
                    y, x = int(rng.integers(0, size - m + 1)), int(rng.integers(0, size - m + 1))
                _blend(image, patch, y, x, rng.uniform(*OPACITY_RANGE))
                mark_boxes[j, i] = (y, x, y + m, x + m)
        images[i] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return Scenes(images, labels, boxes, tuple(plants), planted, mark_boxes)
