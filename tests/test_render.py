"""render.py: colormap tables, PNG sizes and pixel values, the five-panel grid."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.maps import render
from pipeline.maps import views as maps

H, W = 6, 8


def _decode(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def _gradient(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(H, W, 3)).astype(np.float32)


def _image(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def test_colormap_end_colours():
    ones, zeros = np.ones((2, 3)), np.zeros((2, 3))
    np.testing.assert_array_equal(render.colormap(ones)[0, 0], [252, 255, 164])  # inferno top
    np.testing.assert_array_equal(render.colormap(zeros)[1, 2], [0, 0, 4])
    np.testing.assert_array_equal(render.colormap(ones, "viridis")[0, 0], [253, 231, 37])
    gray = render.colormap(np.array([[0.0, 0.5, 1.0, 2.0, -1.0]]), "gray")
    np.testing.assert_array_equal(gray[0, :, 0], [0, 128, 255, 255, 0])  # clipped to [0, 1]
    assert gray.dtype == np.uint8 and gray.shape == (1, 5, 3)


def test_colormap_luminance_increases():
    ramp = render.colormap(np.linspace(0, 1, 256)[None, :])[0].astype(float)
    luminance = ramp @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luminance) > -1.0)  # monotone up to LUT rounding
    assert luminance[-1] - luminance[0] > 200


def test_colormap_rejects_bad_input():
    with pytest.raises(ValueError, match="colormap"):
        render.colormap(np.zeros((2, 2)), "jet")
    with pytest.raises(ValueError, match="2-D"):
        render.colormap(np.zeros((2, 2, 3)))


def test_heatmap_png_size_colour_and_determinism():
    data = render.heatmap_png(np.ones((H, W)))
    pixels = _decode(data)
    assert pixels.shape == (H, W, 3)
    assert np.all(pixels == [252, 255, 164])
    assert render.heatmap_png(np.ones((H, W))) == data
    assert b"tIME" not in data


def test_overlay_blends_alpha():
    image = np.full((H, W, 3), 100, np.uint8)
    half = _decode(render.overlay_png(image, np.ones((H, W)), 0.5))
    np.testing.assert_array_equal(half[0, 0], [176, 178, 132])  # (100 + LUT top) / 2
    np.testing.assert_array_equal(_decode(render.overlay_png(image, np.ones((H, W)), 0.0)), image)
    gray_image = np.full((H, W, 1), 100, np.uint8)
    unseen = _decode(render.overlay_png(gray_image, np.zeros((H, W)), 1.0))
    assert np.all(unseen == [100, 100, 100])  # no saliency: the photo, untouched
    ramp = np.tile(np.linspace(0.0, 1.0, W), (H, 1))
    graded = _decode(render.overlay_png(image, ramp, 1.0)).astype(int)
    heat = render.colormap(ramp).astype(int)
    np.testing.assert_array_equal(graded[:, 0], image[:, 0])  # opacity 0 ...
    np.testing.assert_array_equal(graded[:, -1], heat[:, -1])  # ... to full opacity
    assert np.all(np.abs(graded - image) <= np.abs(heat - image) + 1)
    with pytest.raises(ValueError, match="alpha"):
        render.overlay_png(image, np.ones((H, W)), 1.5)
    with pytest.raises(ValueError, match="image"):
        render.overlay_png(image, np.ones((H + 1, W)))


def test_grid_has_five_panels():
    image, g = _image(), _gradient()
    gap = render.GRID_GAP
    grid = _decode(render.grid_png(image, g))
    assert grid.shape == (H, 5 * W + 4 * gap, 3)
    panels = [grid[:, i * (W + gap) : i * (W + gap) + W] for i in range(5)]
    views = maps.compute_views(g)
    np.testing.assert_array_equal(panels[0], image)
    np.testing.assert_array_equal(panels[1], render.colormap(views["abs"]))
    np.testing.assert_array_equal(panels[2], render.colormap(views["positive"]))
    np.testing.assert_array_equal(panels[3], render.colormap(views["negative"]))
    expected = np.rint(maps.image_times_abs(g, image) * 255).astype(np.uint8)
    np.testing.assert_array_equal(panels[4], expected)
    for i in range(4):  # the gaps are white
        x = i * (W + gap) + W
        assert np.all(grid[:, x : x + gap] == 255)


def test_grid_title_adds_a_strip_and_is_deterministic():
    image, g = _image(), _gradient()
    a = render.grid_png(image, g, title="cat", labels=True)
    assert a == render.grid_png(image, g, title="cat", labels=True)
    pixels = _decode(a)
    assert pixels.shape == (H + 24, 5 * W + 4 * render.GRID_GAP, 3)
    np.testing.assert_array_equal(pixels[24:, :W], image)
    assert (pixels[:24] < 128).any()  # some text was drawn
    gray = _decode(render.grid_png(image[..., :1], g[..., :1]))
    np.testing.assert_array_equal(gray[:, :W, 0], image[..., 0])


def _blocks_equal(big: np.ndarray, small: np.ndarray, f: int) -> None:
    """``big`` is ``small`` with every pixel an f x f block of itself."""
    assert big.shape == (small.shape[0] * f, small.shape[1] * f, *small.shape[2:])
    for dy in range(f):
        for dx in range(f):
            np.testing.assert_array_equal(big[dy::f, dx::f], small)


def test_scale_upscales_every_pixel_to_a_constant_block():
    image, g, m = _image(), _gradient(), np.random.default_rng(2).random((H, W))
    _blocks_equal(_decode(render.heatmap_png(m, scale=3)), _decode(render.heatmap_png(m)), 3)
    _blocks_equal(
        _decode(render.overlay_png(image, m, 0.4, scale=3)),
        _decode(render.overlay_png(image, m, 0.4)),
        3,
    )
    gap = render.GRID_GAP
    plain = _decode(render.grid_png(image, g))
    big = _decode(render.grid_png(image, g, scale=3))
    assert big.shape == (3 * H, 5 * 3 * W + 4 * gap, 3)  # panels scaled, gaps not
    for i in range(5):
        x, x3 = i * (W + gap), i * (3 * W + gap)
        _blocks_equal(big[:, x3 : x3 + 3 * W], plain[:, x : x + W], 3)
        if i < 4:
            assert np.all(big[:, x3 + 3 * W : x3 + 3 * W + gap] == 255)
    titled = _decode(render.grid_png(image, g, scale=2, title="cat", labels=True))
    assert titled.shape == (2 * H + 24, 5 * 2 * W + 4 * gap, 3)
    assert render.heatmap_png(m, scale=1) == render.heatmap_png(m)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="scale"):
            render.heatmap_png(m, scale=bad)


def test_encode_png_round_trip():
    image = _image()
    np.testing.assert_array_equal(_decode(render.encode_png(image)), image)
    with pytest.raises(TypeError, match="uint8"):
        render.encode_png(image.astype(np.float32))


def test_the_annotated_grid_has_the_notebook_titles_scales_and_a_colour_bar():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    g = rng.normal(size=(H, W, 3)).astype(np.float32)
    panels = render.grid_panels(image, g)
    scales = maps.view_scales(g)
    png = render.annotated_grid_png(panels, info="k | class 1, p = 0.9 | guided", scales=scales,
                                    scale=2)  # fmt: skip
    grid = _decode(png)
    top = render.GRID_HEADER
    assert grid.shape == (top + 2 * H + render.GRID_FOOTER, 5 * 2 * W + 4 * render.GRID_GAP, 3)
    np.testing.assert_array_equal(grid[top : top + 2 * H : 2, : 2 * W : 2], image)
    assert (grid[:top] < 128).any()  # text above the panels
    bar_w = min(256, max(64, grid.shape[1] // 3), grid.shape[1] - 4)
    bar = grid[top + 2 * H + 8, 2 : 2 + bar_w]  # the colour bar: the colormap from 0 to 1
    np.testing.assert_array_equal(bar[0], render.colormap(np.zeros((1, 1)))[0, 0])
    assert len({tuple(p) for p in bar}) > 30
    # Each gradient view is labelled with its own scale: the value drawn as 1.
    abs_sum = np.abs(g).sum(axis=-1)
    assert scales["abs"] == pytest.approx(float(np.percentile(abs_sum, 99)), rel=1e-6)
    assert render.annotated_grid_png(panels, info="k", scales=scales) == render.annotated_grid_png(
        panels, info="k", scales=scales
    )
    assert render.GRID_TITLES[4] == "original * abs(gradients)"
