"""Saliency maps -> PNG bytes: colormaps, heatmaps, overlays and the five-view grid.

numpy + Pillow only (no matplotlib, no TensorFlow, no Beam). PNG bytes are deterministic:
Pillow writes no timestamp chunk, and the same array always gives the same bytes.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.choices import DEFAULT_PERCENTILE, RECORD_VIEWS
from pipeline.maps import png
from pipeline.maps import views as maps

# Anchor colours at 11 evenly spaced points (0.0, 0.1, ..., 1.0) of matplotlib's
# perceptually uniform maps; the 256-entry tables interpolate linearly between them.
_ANCHORS = {
    "inferno": ("000004 160b39 420a68 6a176e 932667 bc3754 dd513a f37819 fca50a f6d746 fcffa4"),
    "viridis": ("440154 482475 414487 355f8d 2a788e 21918c 22a884 44bf70 7ad151 bddf26 fde725"),
    "gray": "000000 ffffff",
}
COLORMAPS = tuple(_ANCHORS)
GRID_PANELS = ("original", "abs", "positive", "negative", "image_x_abs")
# The seed notebook's titles of the five views, in GRID_PANELS order.
GRID_TITLES = (
    "original",
    "absolute gradients",
    "positive gradients",
    "negative gradients",
    "original * abs(gradients)",
)
GRID_HEADER = 46  # annotated grid: the info line, the titles and the scales above the panels
GRID_FOOTER = 26  # annotated grid: the colour bar below them
GRID_GAP = 4  # pixels between grid panels
_LABEL_HEIGHT = 12  # pixels of the optional text strip above the panels


def _lut(name: str) -> np.ndarray:
    anchors = np.array(
        [[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in _ANCHORS[name].split()],
        dtype=np.float64,
    )
    xs = np.linspace(0.0, 1.0, len(anchors))
    grid = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(grid, xs, anchors[:, c]) for c in range(3)], axis=-1)
    return np.rint(table).astype(np.uint8)


_LUTS = {name: _lut(name) for name in _ANCHORS}


def _check_map(m: np.ndarray) -> np.ndarray:
    arr = np.asarray(m)
    if arr.ndim != 2:
        raise ValueError(
            f"map has shape {arr.shape}: expected a 2-D [H, W] map in [0, 1] "
            "(use maps.compute_views to reduce a gradient to 2-D)."
        )
    arr = arr.astype(np.float32)
    return np.clip(np.where(np.isfinite(arr), arr, np.float32(0.0)), 0.0, 1.0)


def _check_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[:2] != tuple(shape):
        raise ValueError(
            f"image has shape {np.asarray(image).shape}: expected uint8 [H, W, 3] or "
            f"[H, W, 1] with H, W = {tuple(shape)} (the map's size)."
        )
    if img.dtype != np.uint8:
        raise TypeError(f"image has dtype {img.dtype}: expected uint8 pixels 0..255.")
    return img


def colormap(m: np.ndarray, name: str = "inferno") -> np.ndarray:
    """Map a 2-D [H, W] map in [0, 1] to uint8 RGB [H, W, 3] (values outside are clipped)."""
    if name not in _LUTS:
        raise ValueError(f"colormap name={name!r} is unknown: allowed are {COLORMAPS}.")
    idx = np.rint(_check_map(m) * 255.0).astype(np.intp)
    return _LUTS[name][idx]


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode uint8 [H, W], [H, W, 1] or [H, W, 3] pixels as PNG (deterministic bytes).

    :func:`pipeline.maps.png.encode`: numpy row filters and ISA-L deflate at level 1, since PNG
    encoding is most of the pipeline's own per-image work.
    """
    return png.encode(pixels)


def upscale(pixels: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale of [H, W, ...] pixels by an integer factor: each pixel
    becomes a ``scale`` x ``scale`` block of itself (crisp edges, no new colours)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale={scale!r} must be a whole number >= 1 (1: no upscaling).")
    if scale == 1:
        return pixels
    return np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)


def heatmap_png(m: np.ndarray, *, cmap: str = "inferno", scale: int = 1) -> bytes:
    """PNG of a colormapped 2-D map in [0, 1], upscaled by the integer ``scale``."""
    return encode_png(upscale(colormap(m, cmap), scale))


def _blend(image: np.ndarray, m: np.ndarray, alpha: float, cmap: str) -> np.ndarray:
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha={alpha!r} is out of range: allowed is 0 <= alpha <= 1.")
    heat = colormap(m, cmap).astype(np.float32)
    img = _check_image(image, heat.shape[:2]).astype(np.float32)
    # Opacity grows with saliency: the photo stays visible where the map is low.
    a = float(alpha) * np.clip(_check_map(m), 0.0, 1.0)[..., None]
    return np.rint((1.0 - a) * img + a * heat).astype(np.uint8)


def overlay_png(
    image: np.ndarray, m: np.ndarray, alpha: float = 0.5, *, cmap: str = "inferno", scale: int = 1
) -> bytes:
    """PNG of the colormapped map blended over the image (uint8, same H, W) with a
    per-pixel opacity of ``alpha`` times the map (0 where the map is 0, ``alpha`` where it
    is 1), upscaled by the integer ``scale``."""
    return encode_png(upscale(_blend(image, m, alpha, cmap), scale))


GRID_VIEWS = RECORD_VIEWS  # the maps.compute_views the grid needs


def grid_panels(
    image: np.ndarray,
    gradient: np.ndarray,
    *,
    percentile: float = DEFAULT_PERCENTILE,
    cmap: str = "inferno",
) -> list[np.ndarray]:
    """The five uint8 [H, W, 3] panels of the grid, in :data:`GRID_PANELS` order."""
    g = np.asarray(gradient)
    views = maps.compute_views(g, percentile=percentile, views=GRID_VIEWS)
    return panels_from_views(image, views, cmap=cmap)


def panels_from_views(
    image: np.ndarray, views: dict[str, np.ndarray], *, cmap: str = "inferno"
) -> list[np.ndarray]:
    """The grid's five panels from already computed :data:`GRID_VIEWS` (each [H, W] in
    [0, 1], as ``maps.compute_views`` gives them), so a caller that renders several
    artifacts of one gradient normalises each view once."""
    missing = [v for v in GRID_VIEWS if v not in views]
    if missing:
        raise ValueError(f"views lacks {missing}: the grid needs {GRID_VIEWS}.")
    abs_map = _check_map(views["abs"])
    img = _check_image(image, abs_map.shape)
    weighted = maps.weight_image(abs_map, np.asarray(image))
    if weighted.shape[2] == 1:
        weighted = np.repeat(weighted, 3, axis=-1)
    return [
        img,
        colormap(abs_map, cmap),
        colormap(views["positive"], cmap),
        colormap(views["negative"], cmap),
        np.rint(weighted * 255.0).astype(np.uint8),
    ]


def grid_png(
    image: np.ndarray,
    gradient: np.ndarray,
    *,
    title: str | None = None,
    labels: bool = False,
    percentile: float = DEFAULT_PERCENTILE,
    cmap: str = "inferno",
    gap: int = GRID_GAP,
    scale: int = 1,
) -> bytes:
    """The seed notebook's five-view grid as one PNG.

    Panels, left to right: original | abs | positive | negative | original x abs, each the
    model-input size [H, W] upscaled by the integer ``scale`` (nearest neighbour), separated
    by ``gap`` white pixels (not scaled): width = 5 * scale * W + 4 * gap.
    ``title`` and ``labels`` (the panel names) each add a white 12-pixel text strip above
    the panels (Pillow's default font); without them the height is scale * H.
    """
    panels = grid_panels(image, gradient, percentile=percentile, cmap=cmap)
    return grid_png_from_panels(panels, title=title, labels=labels, gap=gap, scale=scale)


def grid_png_from_panels(
    panels: list[np.ndarray],
    *,
    title: str | None = None,
    labels: bool = False,
    gap: int = GRID_GAP,
    scale: int = 1,
) -> bytes:
    """:func:`grid_png` from its panels (:func:`grid_panels` or :func:`panels_from_views`)."""
    if int(gap) < 0:
        raise ValueError(f"gap={gap!r} must be >= 0 pixels.")
    panels = [upscale(panel, scale) for panel in panels]
    h, w = panels[0].shape[:2]
    lines = int(bool(title)) + int(bool(labels))
    top = lines * _LABEL_HEIGHT
    n = len(panels)
    canvas = np.full((top + h, n * w + (n - 1) * gap, 3), 255, dtype=np.uint8)
    for i, panel in enumerate(panels):
        x = i * (w + gap)
        canvas[top : top + h, x : x + w] = panel
    if top:
        pil = Image.fromarray(canvas)
        draw = ImageDraw.Draw(pil)
        font = ImageFont.load_default()
        if title:
            draw.text((1, 0), title, fill=(0, 0, 0), font=font)
        if labels:
            y = top - _LABEL_HEIGHT
            for i, name in enumerate(GRID_PANELS):
                draw.text((i * (w + gap) + 1, y), name, fill=(0, 0, 0), font=font)
        canvas = np.asarray(pil)
    return encode_png(canvas)


@functools.lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` (loaded once: loading costs more than drawing)."""
    return ImageFont.load_default(size=size)


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text``, cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def annotated_grid_png(
    panels: list[np.ndarray],
    *,
    info: str,
    scales: dict[str, float],
    cmap: str = "inferno",
    gap: int = GRID_GAP,
    scale: int = 1,
) -> bytes:
    """The five views as the seed notebook shows them: a line of ``info`` (key, class,
    probability, method), each panel titled (:data:`GRID_TITLES`), the three gradient
    panels labelled with their own scale (``scales``: "abs", "positive", "negative", the
    gradient value drawn as 1), and a colour bar from 0 to 1 below. Size: width
    5 * scale * W + 4 * gap, height GRID_HEADER + scale * H + GRID_FOOTER."""
    if int(gap) < 0:
        raise ValueError(f"gap={gap!r} must be >= 0 pixels.")
    panels = [upscale(panel, scale) for panel in panels]
    h, w = panels[0].shape[:2]
    width = len(panels) * w + (len(panels) - 1) * gap
    titles, footer = _strips(width, w, int(gap), cmap)
    header = Image.fromarray(titles)  # a copy: the cached strip stays clean
    draw = ImageDraw.Draw(header)
    draw.text((2, 1), _fit(draw, info, _font(13), width - 4), fill=(0, 0, 0), font=_font(13))
    for i, name in enumerate(GRID_PANELS):
        if name in scales:
            label = _fit(draw, f"1 = {scales[name]:.3g}", _font(11), w - 2)
            draw.text((i * (w + gap) + 1, 31), label, fill=(90, 90, 90), font=_font(11))
    canvas = np.full((GRID_HEADER + h + GRID_FOOTER, width, 3), 255, dtype=np.uint8)
    canvas[:GRID_HEADER] = np.asarray(header)
    for i, panel in enumerate(panels):
        canvas[GRID_HEADER : GRID_HEADER + h, i * (w + gap) : i * (w + gap) + w] = panel
    canvas[GRID_HEADER + h :] = footer
    return encode_png(canvas)


@functools.lru_cache(maxsize=16)
def _strips(width: int, w: int, gap: int, cmap: str) -> tuple[np.ndarray, np.ndarray]:
    """The parts of the annotated grid that depend on its size only: the header with the
    panel titles, and the footer with the colour bar (drawn once per size)."""
    header = Image.new("RGB", (width, GRID_HEADER), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    small = _font(11)
    for i, title in enumerate(GRID_TITLES):
        draw.text((i * (w + gap) + 1, 18), _fit(draw, title, small, w - 2), fill=(0, 0, 0),
                  font=small)  # fmt: skip
    footer = np.full((GRID_FOOTER, width, 3), 255, dtype=np.uint8)
    bar_w = max(1, min(256, max(64, width // 3), width - 4))  # tiny grids: a shorter bar
    ramp = colormap(np.tile(np.linspace(0.0, 1.0, bar_w, dtype=np.float32), (10, 1)), cmap)
    footer[4:14, 2 : 2 + bar_w] = ramp
    pil = Image.fromarray(footer)
    draw = ImageDraw.Draw(pil)
    draw.text((2, 14), "0", fill=(0, 0, 0), font=small)
    legend = "1 (each map's own scale: its 99th percentile)"
    draw.text((bar_w + 8, 3), _fit(draw, legend, small, max(10, width - bar_w - 10)),
              fill=(0, 0, 0), font=small)  # fmt: skip
    return np.asarray(header), np.asarray(pil)
