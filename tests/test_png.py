"""png.py: lossless round trips through Pillow's decoder, the filter choice, errors."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.maps import png


def _decode(data: bytes) -> tuple[np.ndarray, str]:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img), img.mode


@pytest.mark.parametrize(
    "shape", [(1, 1), (1, 1, 3), (2, 3, 1), (7, 5), (13, 17, 3), (64, 48, 3), (3, 200)]
)
def test_random_pixels_round_trip_losslessly(shape):
    # Random bytes make every filter's wrap-around (and filtered bytes of 0x80) occur.
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, size=shape, dtype=np.uint8)
    decoded, mode = _decode(png.encode(pixels))
    expected = pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    assert mode == ("RGB" if expected.ndim == 3 else "L")
    np.testing.assert_array_equal(decoded, expected)


def test_filter_choice_follows_the_content():
    # Rows 0-3: a horizontal ramp that varies down the rows -> Sub (1); rows 4-7: each row
    # equals the one above -> Up (2) (row 4 differs from row 3, so None or Sub there);
    # row 8: all zeros -> None (0) (every filter gives zeros; the first wins ties).
    ramp = (np.arange(32, dtype=np.uint8)[None, :] * 7 + 40 * np.arange(4)[:, None]).astype(
        np.uint8
    )
    noisy = np.random.default_rng(0).integers(0, 256, size=(1, 32), dtype=np.uint8)
    rows = np.concatenate([ramp, np.repeat(noisy, 4, axis=0), np.zeros((1, 32), np.uint8)])
    filtered = png.filtered_rows(rows, 1)
    assert filtered.shape == (9, 33)
    np.testing.assert_array_equal(filtered[:4, 0], [1, 1, 1, 1])
    np.testing.assert_array_equal(filtered[5:8, 0], [2, 2, 2])
    assert filtered[8, 0] == 0
    # Sub of the ramp: the first byte as is, then the constant step 7.
    np.testing.assert_array_equal(filtered[1, 1:], [rows[1, 0]] + [7] * 31)
    np.testing.assert_array_equal(filtered[6, 1:], np.zeros(32, np.uint8))
    decoded, _ = _decode(png.encode(rows))
    np.testing.assert_array_equal(decoded, rows)


def test_bytes_are_deterministic_and_a_valid_png_with_the_zlib_fallback(monkeypatch):
    pixels = np.random.default_rng(1).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    first = png.encode(pixels)
    assert first == png.encode(pixels.copy())
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setattr(png, "_deflate", zlib)
    fallback = png.encode(pixels)
    np.testing.assert_array_equal(_decode(fallback)[0], pixels)


def test_non_contiguous_input_is_encoded_as_seen():
    base = np.random.default_rng(2).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    view = base[::2, ::-1]
    np.testing.assert_array_equal(_decode(png.encode(view))[0], view)


@pytest.mark.parametrize(
    ("pixels", "error", "message"),
    [
        (np.zeros((4, 4), np.float32), TypeError, "dtype float32"),
        (np.zeros((4, 4, 4), np.uint8), ValueError, r"shape \(4, 4, 4\)"),
        (np.zeros((4,), np.uint8), ValueError, r"shape \(4,\)"),
        (np.zeros((0, 4, 3), np.uint8), ValueError, "at least 1x1"),
    ],
)
def test_bad_pixels_are_refused_with_the_value(pixels, error, message):
    with pytest.raises(error, match=message):
        png.encode(pixels)
