"""Tests for pipeline.sources: decoding, resizing, keys, and the ReadImages / DecodeImages
PTransforms on files, TFRecords and a TFDS dataset built here (all offline)."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from apache_beam.io.filesystem import FileMetadata, FileSystem
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image, ImageOps

from pipeline import sources as S
from pipeline.elements import EncodedImage

# Not the default DirectRunner: in Beam 2.77 it first tries Prism, which downloads a binary.
RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"
PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "photos"
BIG = 10**8  # max_pixels that no test image reaches


def _pipeline() -> BeamTestPipeline:
    return BeamTestPipeline(runner=RUNNER)


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def decode(data: bytes, channels: int = 3, max_pixels: int = BIG) -> np.ndarray:
    return S.decode_image(data, channels=channels, max_pixels=max_pixels)


def random_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, bytes]:
    """The example photos, shrunk to 64x48 and re-encoded in their own format."""
    out = {}
    for path in sorted(PHOTOS.iterdir()):
        if path.suffix.lower() not in (".jpg", ".png"):
            continue
        img = Image.open(path).convert("RGB").resize((64, 48), Image.Resampling.BILINEAR)
        out[path.name] = encode(img, "JPEG" if path.suffix == ".jpg" else "PNG")
    assert len(out) == 6
    return out


# ------------------------------------------------------------------------------ decoding


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
    for policy in S.RESIZE_POLICIES:
        np.testing.assert_array_equal(S.resize(one, (3, 2), policy), np.full((3, 2, 3), [9, 8, 7]))
    row = np.zeros((1, 500, 3), np.uint8)
    row[:, 245:255] = 200  # only the middle is bright
    out = decode(encode(Image.fromarray(row), "PNG"))
    assert out.shape == (1, 500, 3)
    np.testing.assert_array_equal(S.resize(out, (8, 8), "center_crop"), np.full((8, 8, 3), 200))
    stretched = S.resize(out, (8, 8), "resize")
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

    monkeypatch.setattr(S, "_decode_with_tf", no_decoding)
    monkeypatch.setattr(S, "_decode_with_pillow", no_decoding)
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
        S.decode_image(data, channels=2, max_pixels=BIG)
    with pytest.raises(ValueError, match="max_pixels"):
        S.decode_image(data, channels=3, max_pixels=0)
    with pytest.raises(TypeError, match="bytes"):
        S.decode_image("not bytes", channels=3, max_pixels=BIG)


def test_convert_pixels():
    wide = np.array([[0, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(S.convert_pixels(wide, channels=1)[..., 0], [[0, 255]])
    mask = np.array([[True, False]])
    np.testing.assert_array_equal(S.convert_pixels(mask, channels=3)[0, :, 1], [255, 0])
    with pytest.raises(ValueError, match="float"):
        S.convert_pixels(np.zeros((2, 2, 3), np.float32), channels=3)
    with pytest.raises(ValueError, match="shape"):
        S.convert_pixels(np.zeros((2, 2, 5), np.uint8), channels=3)


# ---------------------------------------------------------------------------- resizing


def test_center_crop_takes_the_middle_columns_exactly():
    columns = np.array([10, 20, 30, 40], np.uint8)
    wide = np.repeat(np.tile(columns, (2, 1))[..., None], 3, axis=-1)  # H=2, W=4
    out = S.resize(wide, (2, 2), "center_crop")
    np.testing.assert_array_equal(out[..., 0], [[20, 30], [20, 30]])
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))  # H=4, W=2: rows 10..40
    np.testing.assert_array_equal(S.resize(tall, (2, 2), "center_crop")[..., 0].T, [[20, 30]] * 2)


def test_center_crop_scales_then_crops_the_centre():
    pixels = np.zeros((8, 24, 3), np.uint8)
    pixels[:, :6] = (255, 0, 0)
    pixels[:, 6:18] = (0, 255, 0)
    pixels[:, 18:] = (0, 0, 255)
    out = S.resize(pixels, (4, 4), "center_crop")  # scale 1/2, then the middle 8 columns
    np.testing.assert_array_equal(out, np.full((4, 4, 3), [0, 255, 0]))


def test_resize_is_plain_bilinear_and_ignores_aspect():
    pixels = np.repeat(np.array([[0, 200], [0, 200]], np.uint8)[..., None], 3, axis=-1)
    out = S.resize(pixels, (2, 4), "resize")  # (height, width)
    assert out.shape == (2, 4, 3)
    np.testing.assert_array_equal(out[..., 0], [[0, 50, 150, 200]] * 2)
    gray = S.resize(pixels[..., :1], (4, 4), "resize")
    assert gray.shape == (4, 4, 1)
    np.testing.assert_array_equal(gray[:, :, 0], [[0, 50, 150, 200]] * 4)


def test_resize_validates():
    pixels = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(ValueError, match="policy 'stretch'"):
        S.resize(pixels, (2, 2), "stretch")
    with pytest.raises(ValueError, match="size"):
        S.resize(pixels, (0, 2), "resize")
    with pytest.raises(TypeError, match="uint8"):
        S.resize(pixels.astype(np.float32), (2, 2), "resize")


# ------------------------------------------------------------------------ keys & globs


def test_sha256_hex():
    assert S.sha256_hex(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


@pytest.mark.parametrize(
    ("path", "root", "key"),
    [
        ("/data/imgs/a/b.jpg", "/data/imgs/**/*.jpg", "a/b.jpg"),
        ("/data/imgs/x.jpg", "/data/imgs/*.jpg", "x.jpg"),
        ("/data/imgs/ab.jpg", "/data/imgs/a*.jpg", "ab.jpg"),
        ("/data/imgs/a/b.jpg", "/data/imgs", "a/b.jpg"),
        ("/data/imgs/a/b.jpg", "/data/imgs/", "a/b.jpg"),
        ("/data/imgs/one.jpg", "/data/imgs/one.jpg", "one.jpg"),
        ("gs://bucket/x/a/b.png", "gs://bucket/x/**", "a/b.png"),
        ("s3://bucket/x/y/z.png", "s3://bucket/x/y?/*.png", "y/z.png"),
        ("C:\\data\\imgs\\a\\b.jpg", "C:\\data\\imgs\\**", "a/b.jpg"),
    ],
)
def test_key_for(path, root, key):
    assert S.key_for(path, root) == key


def test_key_for_rejects_paths_outside_the_root():
    with pytest.raises(ValueError, match="not below"):
        S.key_for("/elsewhere/a.jpg", "/data/imgs/**")


def test_list_pattern_glob_semantics(tmp_path):
    for rel in ("x.jpg", "y.TXT", "a/b.JPG", "a/c/d.png", "a/e.jpeg.bak"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")

    def keys(pattern, **kwargs):
        return sorted(k for _, k in S.list_pattern(f"{tmp_path}/{pattern}", **kwargs))

    assert keys("**/*") == ["a/b.JPG", "a/c/d.png", "x.jpg"]  # '**/' may match no dir
    assert keys("*") == ["x.jpg"]  # '*' does not cross directories
    assert keys("a/**") == ["b.JPG", "c/d.png"]
    assert keys("") == ["a/b.JPG", "a/c/d.png", "x.jpg"]  # trailing '/': everything below
    assert keys("**/*.[jJ]*") == ["a/b.JPG", "x.jpg"]
    assert keys("a/*/*.png") == ["c/d.png"]
    assert keys("*", extensions=None) == ["x.jpg", "y.TXT"]
    with pytest.raises(ValueError, match="none has an image extension"):
        list(S.list_pattern(f"{tmp_path}/*.TXT"))
    with pytest.raises(ValueError, match="no file matched"):
        list(S.list_pattern(f"{tmp_path}/nothing/**"))
    with pytest.raises(ValueError, match="is a directory"):
        list(S.list_pattern(f"{tmp_path}/a"))


def test_to_image_item_from_pixels():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    item = S.to_image_item(
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
        S.to_image_item(
            EncodedImage(key="k", source="s"),
            input_size=(3, 4),
            channels=3,
            resize_policy="resize",
            max_pixels=BIG,
        )


def test_transforms_validate_arguments():
    with pytest.raises(ValueError, match="kind='folder'"):
        S.ReadImages(kind="folder", pattern="x")
    with pytest.raises(ValueError, match="pattern"):
        S.ReadImages(kind="files", pattern=" , ")
    with pytest.raises(ValueError, match="tfds_name"):
        S.ReadImages(kind="tfds")
    with pytest.raises(ValueError, match="limit=0"):
        S.ReadImages(kind="files", pattern="x", limit=0)
    with pytest.raises(ValueError, match="policy"):
        S.DecodeImages(input_size=(8, 8), channels=3, resize_policy="crop", max_pixels=BIG)
    with pytest.raises(ValueError, match="size"):
        S.DecodeImages(input_size=(8,), channels=3, resize_policy="resize", max_pixels=BIG)


# ------------------------------------------------------------------------------- Beam


def _key_stage(failure) -> tuple[str, str]:
    return failure.key, failure.stage


def _key(element) -> str:
    return element.key


def _pixel_bytes(item) -> bytes:
    return item.pixels.tobytes()


def _item_summary(item) -> tuple:
    return (
        item.key,
        item.label,
        item.sha256,
        item.pixels.shape,
        item.original_height,
        item.original_width,
    )


@pytest.fixture()
def image_tree(tmp_path, photos) -> Path:
    root = tmp_path / "imgs"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "photo0.jpg").write_bytes(photos["grace_hopper.jpg"])
    (root / "a" / "b" / "photo1.PNG").write_bytes(photos["astronaut.png"])
    (root / "top.png").write_bytes(photos["chelsea.png"])
    (root / "notes.txt").write_text("not an image")
    (root / "bad.jpg").write_text("<html><body>moved</body></html>")
    os.symlink(root / "missing.jpg", root / "dangling.jpg")
    return root


def test_files_pipeline_items_and_failures(image_tree, photos):
    root = str(image_tree)
    sha = {k: S.sha256_hex(photos[n]) for k, n in [
        ("a/photo0.jpg", "grace_hopper.jpg"),
        ("a/b/photo1.PNG", "astronaut.png"),
        ("top.png", "chelsea.png"),
    ]}  # fmt: skip
    with _pipeline() as p:
        read = p | "ReadAll" >> S.ReadImages(kind="files", pattern=f"{root}/**/*")
        decoded = read.images | "DecodeAll" >> S.DecodeImages(
            input_size=(8, 8), channels=3, resize_policy="center_crop", max_pixels=BIG
        )
        assert_that(
            decoded.items | "Summaries" >> beam.Map(_item_summary),
            equal_to([(k, -1, sha[k], (8, 8, 3), 48, 64) for k in sha]),
            label="CheckItems",
        )
        failures = (read.failures, decoded.failures) | "AllFailures" >> beam.Flatten()
        assert_that(
            failures | "FailureKeys" >> beam.Map(_key_stage),
            equal_to([("dangling.jpg", "read"), ("bad.jpg", "decode")]),
            label="CheckFailures",
        )
        # Globs are case-sensitive ('*.png' misses photo1.PNG); keys are relative to the
        # patterns' common root (never two files under one key); a file matched twice is
        # read once.
        overlap = p | "ReadOverlap" >> S.ReadImages(
            kind="files",
            pattern=f"{root}/**/*.png, {root}/top.png, {root}/a/**, {root}/**/*.jpg",
        )
        assert_that(
            overlap.images | "OverlapKeys" >> beam.Map(_key),
            equal_to(["top.png", "a/photo0.jpg", "a/b/photo1.PNG", "bad.jpg"]),
            label="CheckOverlap",
        )
        limited = p | "ReadLimited" >> S.ReadImages(kind="files", pattern=f"{root}/", limit=2)
        assert_that(
            limited.images | "LimitedKeys" >> beam.Map(_key),
            equal_to(["a/b/photo1.PNG", "a/photo0.jpg"]),  # the two smallest keys
            label="CheckLimited",
        )


def test_decoded_item_pixels_match_the_pure_functions(image_tree, photos):
    expected = S.resize(decode(photos["chelsea.png"]), (6, 10), "resize")
    with _pipeline() as p:
        read = p | S.ReadImages(kind="files", pattern=f"{image_tree}/top.png")
        decoded = read.images | S.DecodeImages(
            input_size=(6, 10), channels=3, resize_policy="resize", max_pixels=BIG
        )
        assert_that(
            decoded.items | beam.Map(_pixel_bytes),
            equal_to([expected.tobytes()]),
        )


def test_files_patterns_that_match_nothing_fail_at_construction(image_tree):
    p = beam.Pipeline(runner=RUNNER)
    with pytest.raises(ValueError, match="matches no image file"):
        _ = p | "Missing" >> S.ReadImages(kind="files", pattern=f"{image_tree}/nope/*.jpg")
    with pytest.raises(ValueError, match="none has an image extension"):
        _ = p | "TextOnly" >> S.ReadImages(kind="files", pattern=f"{image_tree}/*.txt")
    with pytest.raises(ValueError, match="matches no file"):
        _ = p | "NoRecords" >> S.ReadImages(kind="tfrecord", pattern=f"{image_tree}/*.tfrecord")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_a_read_failure(tmp_path, photos):
    (tmp_path / "ok.png").write_bytes(photos["coffee.png"])
    locked = tmp_path / "locked.png"
    locked.write_bytes(photos["coffee.png"])
    locked.chmod(0)
    with _pipeline() as p:
        read = p | S.ReadImages(kind="files", pattern=f"{tmp_path}/*.png")
        assert_that(read.images | "Keys" >> beam.Map(_key), equal_to(["ok.png"]), label="Ok")
        assert_that(
            read.failures | "Failures" >> beam.Map(_key_stage),
            equal_to([("locked.png", "read")]),
            label="Failed",
        )


class MemoryFileSystem(FileSystem):
    """A flat object store like GCS or S3 (no directories) under ``memtest://``.

    A value of None is an object that is listed but cannot be read (permissions)."""

    OBJECTS: dict[str, bytes | None] = {}

    @classmethod
    def scheme(cls):
        return "memtest"

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *paths])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def has_dirs(self):
        return False

    def _list(self, prefix):
        for path, data in sorted(self.OBJECTS.items()):
            if path.startswith(prefix):
                yield FileMetadata(path, len(data or b""))

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        data = self.OBJECTS.get(path)
        if data is None:
            raise PermissionError(f"403 Forbidden: {path}")
        return io.BytesIO(data)

    def exists(self, path):
        return path in self.OBJECTS

    def size(self, path):
        return len(self.OBJECTS[path] or b"")

    def metadata(self, path):
        return FileMetadata(path, self.size(path))

    def last_updated(self, path):
        return 0.0

    def mkdirs(self, path):
        raise NotImplementedError

    def create(self, path, mime_type="application/octet-stream", compression_type=None):
        raise NotImplementedError

    def copy(self, source_file_names, destination_file_names):
        raise NotImplementedError

    def rename(self, source_file_names, destination_file_names):
        raise NotImplementedError

    def delete(self, paths):
        raise NotImplementedError


@pytest.fixture()
def object_store(photos):
    MemoryFileSystem.OBJECTS = {
        "memtest://bucket/imgs/a.jpg": photos["rocket.jpg"],
        "memtest://bucket/imgs/sub/": b"",  # a "directory" placeholder object
        "memtest://bucket/imgs/sub/b.png": photos["coffee.png"],
        "memtest://bucket/imgs/sub/readme.txt": b"text",
        "memtest://bucket/imgs/sub/locked.jpg": None,
        "memtest://bucket/other/c.jpg": photos["rocket.jpg"],
    }
    yield "memtest://bucket"
    MemoryFileSystem.OBJECTS = {}


def test_object_store_listing(object_store):
    def keys(pattern):
        return sorted(k for _, k in S.list_pattern(f"{object_store}/{pattern}"))

    assert keys("imgs/**") == ["a.jpg", "sub/b.png", "sub/locked.jpg"]
    assert keys("imgs/**/*.jpg") == ["a.jpg", "sub/locked.jpg"]
    assert keys("imgs/*") == ["a.jpg"]
    assert keys("imgs/sub/b.png") == ["b.png"]
    with pytest.raises(ValueError, match="none has an image extension"):
        keys("imgs/**/*.txt")
    p = beam.Pipeline(runner=RUNNER)
    # '**/' may match no directory: only imgs/a.jpg matches, construction still passes.
    _ = p | "TopOnly" >> S.ReadImages(kind="files", pattern=f"{object_store}/imgs/**/a.jpg")
    with pytest.raises(ValueError, match="matches no image file"):
        _ = p | "Missing" >> S.ReadImages(kind="files", pattern=f"{object_store}/nope/*.jpg")


def test_object_store_pipeline(object_store, photos):
    with _pipeline() as p:
        read = p | S.ReadImages(kind="files", pattern=f"{object_store}/imgs/**")
        assert_that(
            read.images | "Images" >> beam.Map(_source_and_key),
            equal_to(
                [
                    ("memtest://bucket/imgs/a.jpg", "a.jpg"),
                    ("memtest://bucket/imgs/sub/b.png", "sub/b.png"),
                ]
            ),
            label="CheckImages",
        )
        assert_that(
            read.failures | "Failures" >> beam.Map(_key_stage),
            equal_to([("sub/locked.jpg", "read")]),
            label="CheckFailures",
        )


def _source_and_key(image) -> tuple[str, str]:
    return image.source, image.key


def _example(features: dict) -> bytes:
    feature = {}
    for name, value in features.items():
        if isinstance(value, bytes):
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        elif isinstance(value, float):
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        else:
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString()


def _basename_summary(image) -> tuple:
    return image.key, image.label, os.path.basename(image.source)


def test_tfrecord_pipeline(tmp_path, photos):
    jpeg, png = photos["rocket.jpg"], photos["coffee.png"]
    records = [
        _example({"image/encoded": jpeg, "image/class/label": 3, "image/key": b"cat/1"}),
        _example({"image/encoded": png}),  # no label, no key: -1 and the content hash
        _example({"image/class/label": 1}),  # no image
        _example({"image/encoded": jpeg, "image/class/label": 0.5, "image/key": b"floaty"}),
        b"\xff" * 8,  # not a tf.train.Example
        _example({"image/encoded": b"<html>not an image</html>", "image/key": b"html"}),
    ]
    shard = tmp_path / "data.tfrecord-00000-of-00001"
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for record in records:
            writer.write(record)
    with _pipeline() as p:
        read = p | S.ReadImages(
            kind="tfrecord", pattern=f"{tmp_path}/*.tfrecord*", key_key="image/key"
        )
        decoded = read.images | S.DecodeImages(
            input_size=(4, 4), channels=1, resize_policy="resize", max_pixels=BIG
        )
        assert_that(
            read.images | "Images" >> beam.Map(_basename_summary),
            equal_to(
                [
                    ("cat/1", 3, shard.name),
                    (S.sha256_hex(png), -1, shard.name),
                    ("html", -1, shard.name),
                ]
            ),
            label="CheckImages",
        )
        assert_that(
            read.failures | "ReadFailures" >> beam.Map(_key_stage),
            equal_to(
                [(S.sha256_hex(records[2]), "read"), ("floaty", "read")]
                + [(S.sha256_hex(records[4]), "read")]
            ),
            label="CheckReadFailures",
        )
        assert_that(
            decoded.items | "Items" >> beam.Map(_item_summary),
            equal_to(
                [
                    ("cat/1", 3, S.sha256_hex(jpeg), (4, 4, 1), 48, 64),
                    (S.sha256_hex(png), -1, S.sha256_hex(png), (4, 4, 1), 48, 64),
                ]
            ),
            label="CheckItems",
        )
        assert_that(
            decoded.failures | "DecodeFailures" >> beam.Map(_key_stage),
            equal_to([("html", "decode")]),
            label="CheckDecodeFailures",
        )


TFDS_IMAGES = [np.random.default_rng(i).integers(0, 256, (5 + i, 4, 3), np.uint8) for i in range(5)]


class TinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Five random images in "train", two in "test"; labels i % 3."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = None  # no checksums file to look for (and no importlib_resources needed)

    def _info(self):
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(num_classes=3),
            }
        )
        return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(5), "test": self._generate_examples(2)}

    def _generate_examples(self, count):
        for i in range(count):
            yield f"{i:03d}", {"image": TFDS_IMAGES[i], "label": i % 3}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    TinyImages(data_dir=data_dir).download_and_prepare()
    return data_dir


def test_tfds_pipeline(tfds_dir):
    def expected(split, indices):
        return [
            (f"tiny_images/{split}/{i}", i % 3, S.sha256_hex(TFDS_IMAGES[i].tobytes()))
            for i in indices
        ]

    with _pipeline() as p:
        read = p | "ReadTrain" >> S.ReadImages(
            kind="tfds", tfds_name="tiny_images", tfds_data_dir=tfds_dir
        )
        decoded = read.images | "Decode" >> S.DecodeImages(
            input_size=(4, 4), channels=3, resize_policy="center_crop", max_pixels=BIG
        )
        assert_that(
            decoded.items | "Items" >> beam.Map(_item_sha),
            equal_to(expected("train", range(5))),
            label="CheckTrain",
        )
        no_failures = (read.failures, decoded.failures) | "Failures" >> beam.Flatten()
        assert_that(no_failures, equal_to([]), label="CheckNoFailures")
        sub = p | "ReadSubsplits" >> S.ReadImages(
            kind="tfds",
            tfds_name="tiny_images",
            tfds_data_dir=tfds_dir,
            tfds_split="train[2:4]+test",
        )
        assert_that(
            sub.images | "SubKeys" >> beam.Map(_key),
            equal_to(["tiny_images/train/2", "tiny_images/train/3"] + [
                "tiny_images/test/0", "tiny_images/test/1"
            ]),
            label="CheckSubsplits",
        )  # fmt: skip


def _item_sha(item) -> tuple:
    return item.key, item.label, item.sha256


def test_tfds_not_prepared_or_wrong_feature_fails_at_construction(tmp_path, tfds_dir):
    p = beam.Pipeline(runner=RUNNER)
    with pytest.raises(ValueError, match="download_and_prepare"):
        _ = p | "Missing" >> S.ReadImages(
            kind="tfds", tfds_name="tiny_images", tfds_data_dir=str(tmp_path)
        )
    with pytest.raises(ValueError, match="no feature 'picture'"):
        _ = p | "Feature" >> S.ReadImages(
            kind="tfds",
            tfds_name="tiny_images",
            tfds_data_dir=tfds_dir,
            tfds_image_feature="picture",
        )
    with pytest.raises(ValueError, match="no split 'validation'"):
        _ = p | "Split" >> S.ReadImages(
            kind="tfds", tfds_name="tiny_images", tfds_data_dir=tfds_dir, tfds_split="validation"
        )


def test_example_photos_decode(photos):
    # Every shipped example photo goes through decode + both policies.
    for name, data in photos.items():
        pixels = decode(data)
        assert pixels.shape == (48, 64, 3), name
        for policy in S.RESIZE_POLICIES:
            out = S.resize(pixels, (16, 16), policy)
            assert out.shape == (16, 16, 3)
            assert abs(float(out.mean()) - float(pixels.mean())) < 20, (name, policy)
