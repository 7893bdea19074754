"""Tests for pipeline.decode: decoding every supported format, conversions, EXIF
orientation, refusals before decoding, resizing, content hashes (no Beam)."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from pipeline.elements import EncodedImage
from pipeline.store import decode as D
from pipeline.testing.images import BIG, decode, encode, random_rgb

# ------------------------------------------------------------------- decoding


def test_png_rgb_is_exact_and_gray_uses_pillow_luma():
    pixels = random_rgb(5, 7)
    data = encode(Image.fromarray(pixels), "PNG")
    np.testing.assert_array_equal(decode(data), pixels)
    expected_gray = np.asarray(Image.fromarray(pixels).convert("L"))[..., None]
    np.testing.assert_array_equal(decode(data, channels=1), expected_gray)


def test_jpeg_colour_and_grayscale(photos):
    solid = encode(Image.new("RGB", (16, 8), (200, 40, 90)), "JPEG", quality=95)
    out = decode(solid)
    assert out.shape == (8, 16, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - [200, 40, 90]).max() <= 3
    gray = encode(Image.new("L", (9, 4), 77), "JPEG", quality=95)
    out3 = decode(gray)
    assert out3.shape == (4, 9, 3)
    np.testing.assert_array_equal(out3[..., 0], out3[..., 2])
    assert np.abs(out3.astype(int) - 77).max() <= 2
    # A real photo: tf.io (accurate integer DCT) and Pillow, both libjpeg-turbo, agree;
    # tf.io's default fast DCT would be off by about 1 on average.
    data = photos["grace_hopper.jpg"]
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    diff = np.abs(decode(data).astype(int) - reference)
    assert diff.mean() < 0.05 and diff.max() <= 2


def test_sixteen_bit_png_scales_to_eight_bits():
    values = np.array([[0, 257, 32896, 65534, 65535]], dtype=np.uint16)
    gray16 = encode(Image.fromarray(values, mode="I;16"), "PNG")
    np.testing.assert_array_equal(decode(gray16, channels=1)[..., 0], [[0, 1, 128, 255, 255]])
    rgb16 = np.zeros((2, 3, 3), np.uint16)
    rgb16[0, 0] = (65535, 0, 257 * 100)
    rgb16[1, 2] = (32896, 65535, 1000)
    data = tf.io.encode_png(tf.constant(rgb16)).numpy()
    assert data[24] == 16  # really a 16-bit PNG
    out = decode(data)
    np.testing.assert_array_equal(out[0, 0], [255, 0, 100])
    np.testing.assert_array_equal(out[1, 2], [128, 255, 4])  # 1000*255/65535 = 3.89


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (6, 4), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    out = decode(data)
    assert out.shape == (4, 6, 3)
    assert (out == [255, 0, 0]).all()


def test_bmp_rgb_and_palette_are_exact():
    pixels = random_rgb(3, 5, seed=1)
    np.testing.assert_array_equal(decode(encode(Image.fromarray(pixels), "BMP")), pixels)
    pal = Image.new("P", (4, 2), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert (decode(encode(pal, "BMP")) == [10, 200, 30]).all()


def test_webp_lossless_alpha_and_animated():
    pixels = random_rgb(4, 6, seed=2)
    np.testing.assert_array_equal(
        decode(encode(Image.fromarray(pixels), "WEBP", lossless=True)), pixels
    )
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: as is
    rgba[0, 1] = (0, 0, 0, 0)  # transparent: white
    rgba[0, 2] = (0, 0, 0, 128)  # half: 255 * 127/255
    rgba[1, :] = (200, 100, 50, 255)
    data = encode(Image.fromarray(rgba, mode="RGBA"), "WEBP", lossless=True, exact=True)
    out = decode(data)
    np.testing.assert_array_equal(out[0], [[10, 20, 30], [255, 255, 255], [127, 127, 127]])
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 255, 0))]
    anim = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    out = decode(anim)
    assert out.shape == (4, 4, 3) and (out == [255, 0, 0]).all()


def test_tiff_rgb_and_sixteen_bit():
    pixels = random_rgb(3, 4, seed=3)
    np.testing.assert_array_equal(decode(encode(Image.fromarray(pixels), "TIFF")), pixels)
    values = np.array([[0, 65535], [257, 32896]], dtype=np.uint16)
    data = encode(Image.fromarray(values, mode="I;16"), "TIFF")
    np.testing.assert_array_equal(decode(data, channels=1)[..., 0], [[0, 255], [1, 128]])


def test_cmyk_jpeg_becomes_rgb():
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode(data)
    assert out.shape == (16, 16, 3)
    assert np.abs(out.astype(int) - [255, 0, 0]).max() <= 3


def test_palette_png_with_and_without_transparency():
    pal = Image.new("P", (3, 2), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((2, 1), 1)
    out = decode(encode(pal, "PNG"))
    assert (out[0] == [255, 0, 0]).all() and (out[1, 2] == [0, 0, 255]).all()
    out = decode(encode(pal, "PNG", transparency=0))  # index 0 transparent
    assert (out[0] == [255, 255, 255]).all() and (out[1, 2] == [0, 0, 255]).all()


def test_rgba_composited_over_white_and_grayscale_expanded():
    rgba = np.array([[[0, 0, 0, 0], [255, 0, 0, 255], [0, 0, 255, 51]]], np.uint8)
    data = encode(Image.fromarray(rgba, mode="RGBA"), "PNG")
    # 51/255 = 0.2 of blue over white: 0.8 * 255 = 204 on red and green.
    np.testing.assert_array_equal(decode(data)[0], [[255, 255, 255], [255, 0, 0], [204, 204, 255]])
    gray = np.array([[0, 100, 255]], np.uint8)
    out = decode(encode(Image.fromarray(gray, mode="L"), "PNG"))
    np.testing.assert_array_equal(out[0], [[0, 0, 0], [100, 100, 100], [255, 255, 255]])
    la = np.array([[[100, 0], [100, 255]]], np.uint8)
    out = decode(encode(Image.fromarray(la, mode="LA"), "PNG"), channels=1)
    np.testing.assert_array_equal(out[0, :, 0], [255, 100])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_exif_transpose(orientation):
    pixels = random_rgb(4, 6, seed=orientation)
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = orientation
    data = encode(img, "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    out = decode(data)
    assert out.shape == ((4, 6, 3) if orientation < 5 else (6, 4, 3))
    np.testing.assert_array_equal(out, expected)


def test_exif_rotated_jpeg_swaps_sides_and_moves_corner():
    pixels = np.zeros((16, 32, 3), np.uint8)
    pixels[...] = (0, 0, 255)
    pixels[:8, :16] = (255, 0, 0)  # top-left quadrant red
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees clockwise to display
    out = decode(encode(img, "JPEG", quality=95, exif=exif.tobytes()))
    assert out.shape == (32, 16, 3)
    red, blue = np.array([255, 0, 0]), np.array([0, 0, 255])
    assert np.abs(out[1, 14].astype(int) - red).max() <= 8  # top-left went top-right
    assert np.abs(out[1, 1].astype(int) - blue).max() <= 8
    assert np.abs(out[30, 14].astype(int) - blue).max() <= 8


def test_tiny_and_extreme_aspect_images():
    one = decode(encode(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG"))
    np.testing.assert_array_equal(one, [[[9, 8, 7]]])
    for policy in D.RESIZE_POLICIES:
        np.testing.assert_array_equal(D.resize(one, (3, 2), policy), np.full((3, 2, 3), [9, 8, 7]))
    row = np.zeros((1, 500, 3), np.uint8)
    row[:, 245:255] = 200  # only the middle is bright
    out = decode(encode(Image.fromarray(row), "PNG"))
    assert out.shape == (1, 500, 3)
    np.testing.assert_array_equal(D.resize(out, (8, 8), "center_crop"), np.full((8, 8, 3), 200))
    stretched = D.resize(out, (8, 8), "resize")
    assert stretched.shape == (8, 8, 3)
    assert (stretched == stretched[:1]).all()  # every row the same
    assert stretched[0, 0].max() == 0 and stretched[0, 4].max() > 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (np.random.default_rng(7).bytes(1000), "not a recognised image"),
        (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "not a recognised image"),
        (b"GIF89a", "not a recognised image"),
    ],
    ids=["empty", "random", "html", "gif-magic-only"],
)
def test_non_images_raise_value_error(data, reason):
    with pytest.raises(ValueError, match=reason):
        decode(data)


def test_truncated_images_raise_value_error(photos):
    jpeg, png = photos["rocket.jpg"], photos["chelsea.png"]
    for data in (jpeg[:-300], png[: len(png) // 2]):  # headers intact, pixel data cut
        with pytest.raises(ValueError, match="cannot decode"):
            decode(data)
    with pytest.raises(ValueError, match="not a recognised image"):
        decode(jpeg[:40])  # cut inside the header


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_decompression_bombs_refused_before_decoding(monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(D, "_decode_with_tf", no_decoding)
    monkeypatch.setattr(D, "_decode_with_pillow", no_decoding)
    with pytest.raises(ValueError, match="decompression bomb"):
        decode(_png_header(100_000, 100_000), max_pixels=10**6)  # Pillow's own limit
    with pytest.raises(ValueError, match=r"2000x2000 = 4000000 pixels.*max_pixels=1000000"):
        decode(_png_header(2000, 2000), max_pixels=10**6)
    real = encode(Image.new("RGB", (3000, 3000), (1, 2, 3)), "PNG")
    with pytest.raises(ValueError, match="3000x3000"):
        decode(real, max_pixels=10**6)


def test_decode_validates_its_options():
    data = encode(Image.new("RGB", (2, 2)), "PNG")
    with pytest.raises(ValueError, match="channels=2"):
        D.decode_image(data, channels=2, max_pixels=BIG)
    with pytest.raises(ValueError, match="max_pixels"):
        D.decode_image(data, channels=3, max_pixels=0)
    with pytest.raises(TypeError, match="bytes"):
        D.decode_image("not bytes", channels=3, max_pixels=BIG)


def test_convert_pixels():
    wide = np.array([[0, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(D.convert_pixels(wide, channels=1)[..., 0], [[0, 255]])
    mask = np.array([[True, False]])
    np.testing.assert_array_equal(D.convert_pixels(mask, channels=3)[0, :, 1], [255, 0])
    with pytest.raises(ValueError, match="float"):
        D.convert_pixels(np.zeros((2, 2, 3), np.float32), channels=3)
    with pytest.raises(ValueError, match="shape"):
        D.convert_pixels(np.zeros((2, 2, 5), np.uint8), channels=3)


# ------------------------------------------------------------------- resizing


def test_center_crop_takes_the_middle_columns_exactly():
    columns = np.array([10, 20, 30, 40], np.uint8)
    wide = np.repeat(np.tile(columns, (2, 1))[..., None], 3, axis=-1)  # H=2, W=4
    out = D.resize(wide, (2, 2), "center_crop")
    np.testing.assert_array_equal(out[..., 0], [[20, 30], [20, 30]])
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))  # H=4, W=2: rows 10..40
    np.testing.assert_array_equal(D.resize(tall, (2, 2), "center_crop")[..., 0].T, [[20, 30]] * 2)


def test_center_crop_scales_then_crops_the_centre():
    pixels = np.zeros((8, 24, 3), np.uint8)
    pixels[:, :6] = (255, 0, 0)
    pixels[:, 6:18] = (0, 255, 0)
    pixels[:, 18:] = (0, 0, 255)
    out = D.resize(pixels, (4, 4), "center_crop")  # scale 1/2, then the middle 8 columns
    np.testing.assert_array_equal(out, np.full((4, 4, 3), [0, 255, 0]))


def test_resize_is_plain_bilinear_and_ignores_aspect():
    pixels = np.repeat(np.array([[0, 200], [0, 200]], np.uint8)[..., None], 3, axis=-1)
    out = D.resize(pixels, (2, 4), "resize")  # (height, width)
    assert out.shape == (2, 4, 3)
    np.testing.assert_array_equal(out[..., 0], [[0, 50, 150, 200]] * 2)
    gray = D.resize(pixels[..., :1], (4, 4), "resize")
    assert gray.shape == (4, 4, 1)
    np.testing.assert_array_equal(gray[:, :, 0], [[0, 50, 150, 200]] * 4)


def test_resize_validates():
    pixels = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(ValueError, match="policy 'stretch'"):
        D.resize(pixels, (2, 2), "stretch")
    with pytest.raises(ValueError, match="size"):
        D.resize(pixels, (0, 2), "resize")
    with pytest.raises(TypeError, match="uint8"):
        D.resize(pixels.astype(np.float32), (2, 2), "resize")


# ----------------------------------------------------------- hashes and items


def test_sha256_hex():
    assert D.sha256_hex(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_to_image_item_from_pixels():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    item = D.to_image_item(
        EncodedImage(key="k", source="s", pixels=gray, label=4),
        input_size=(3, 4),
        channels=3,
        resize_policy="resize",
        max_pixels=BIG,
    )
    np.testing.assert_array_equal(item.pixels, np.repeat(gray, 3, axis=-1))
    assert (item.label, item.original_height, item.original_width) == (4, 3, 4)
    assert item.sha256 == hashlib.sha256(gray.tobytes()).hexdigest()
    with pytest.raises(ValueError, match="neither"):
        D.to_image_item(
            EncodedImage(key="k", source="s"),
            input_size=(3, 4),
            channels=3,
            resize_policy="resize",
            max_pixels=BIG,
        )


def test_example_photos_decode(photos):
    # Every shipped example photo goes through decode + both policies.
    for name, data in photos.items():
        pixels = decode(data)
        assert pixels.shape == (48, 64, 3), name
        for policy in D.RESIZE_POLICIES:
            out = D.resize(pixels, (16, 16), policy)
            assert out.shape == (16, 16, 3)
            assert abs(float(out.mean()) - float(pixels.mean())) < 20, (name, policy)
