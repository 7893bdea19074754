"""PNG encoding of uint8 pixel arrays: numpy row filters + ISA-L deflate.

PNG encoding is most of the pipeline's own per-image CPU time. Pillow's writer tries
every filter on every row and deflates with zlib; here the row filters are chosen with
whole-array numpy operations and the deflate is ISA-L's (the ``isal`` package) at level 1,
about 7x faster than zlib level 1 on saliency grids for 4% larger files (see
benchmarks/RESULTS.md). Without ``isal`` (a platform with no wheel) it falls back to
zlib level 1. The bytes are a plain 8-bit greyscale or RGB PNG (IHDR, one IDAT, IEND; no
timestamp), the same for the same pixels in one environment, and decode losslessly with
any PNG reader.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

try:
    from isal import isal_zlib as _deflate
except ImportError:  # no isal wheel for this platform: the standard library's zlib
    _deflate = zlib

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type (greyscale, truecolour)
_LEVEL = 1  # isal 0..3, zlib 0..9: maps compress about as well as at zlib's 6, far faster


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(tag)) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def _check_pixels(pixels: np.ndarray) -> np.ndarray:
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        raise TypeError(f"pixels have dtype {arr.dtype}: expected uint8 0..255.")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"pixels have shape {arr.shape}: expected [H, W], [H, W, 1] or [H, W, 3].")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"pixels have shape {arr.shape}: a PNG needs at least 1x1 pixels.")
    return arr


def filtered_rows(rows: np.ndarray, channels: int) -> np.ndarray:
    """Each row prefixed by its PNG filter type and filtered by it: uint8 [H, 1 + W * C].

    Per row, the filter among None (0), Sub (1) and Up (2) with the smallest sum of the
    filtered bytes read as signed, libpng's default heuristic.
    """
    height, width = rows.shape
    candidates = np.empty((3, height, width), dtype=np.uint8)
    candidates[0] = rows
    # uint8 arithmetic wraps modulo 256, as PNG's filters do.
    candidates[1, :, :channels] = rows[:, :channels]
    np.subtract(rows[:, channels:], rows[:, :-channels], out=candidates[1, :, channels:])
    candidates[2, 0] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=candidates[2, 1:])
    # |signed byte|: abs of the int8 view, read back as uint8 so that |-128| counts 128.
    magnitude = np.abs(candidates.view(np.int8)).view(np.uint8)
    choice = magnitude.sum(axis=-1, dtype=np.uint32).argmin(axis=0).astype(np.uint8)
    out = np.empty((height, width + 1), dtype=np.uint8)
    out[:, 0] = choice
    out[:, 1:] = candidates[choice, np.arange(height)]
    return out


def encode(pixels: np.ndarray) -> bytes:
    """PNG bytes of uint8 [H, W], [H, W, 1] (greyscale) or [H, W, 3] (RGB) pixels."""
    arr = _check_pixels(pixels)
    height, width = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else 3
    rows = np.ascontiguousarray(arr).reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    data = _deflate.compress(filtered_rows(rows, channels).tobytes(), _LEVEL)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
