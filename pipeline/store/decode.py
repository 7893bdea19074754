"""Pure image decoding and resizing: bytes or pixels -> uint8 [H, W, C] at the model size.

No Beam here (:mod:`pipeline.beam.prepare` wraps these functions in DoFns). Decoding
(:func:`decode_image`) runs on the CPU and never on an accelerator:

* the header is read first with Pillow (lazy, no pixel data) to know the format, the size
  and the EXIF orientation; images above ``max_pixels`` are refused before any decode
  (decompression bombs);
* tf.io decodes the formats it handles fully: JPEG (RGB / grayscale), PNG (8 and 16 bit,
  palette, alpha), still WebP (alpha too);
* Pillow decodes the rest: GIF (first frame only; tf.io.decode_gif decodes every frame),
  BMP (tf.io supports only uncompressed 24/32-bit), TIFF, CMYK / YCCK JPEG, animated WebP,
  and is the fallback whenever tf.io fails;
* alpha is composited over white (a transparent background shows as white, not as the
  arbitrary colour stored under alpha 0); 16-bit samples are scaled with rounding,
  ``round(v * 255 / 65535)``; grayscale <-> RGB uses Pillow's ITU-R 601-2 luma weights;
  EXIF orientation is applied (JPEG, TIFF, WebP, PNG with eXIf before the pixel data);
  embedded ICC colour profiles are not applied (as with tf.io and keras' load_img).
"""

from __future__ import annotations

import hashlib
import io
import re
import zlib

import numpy as np
from PIL import Image

from pipeline.choices import RESIZE_POLICIES
from pipeline.elements import EncodedImage, ImageItem
from pipeline.store.resize import check_resize_args, resize

__all__ = [
    "IMAGE_EXTENSIONS",
    "RESIZE_POLICIES",
    "check_decode_options",
    "content_sha256",
    "convert_pixels",
    "decode_image",
    "resize",
    "sha256_hex",
    "short_error",
    "to_image_item",
]

# The formats decode_image reads, as file extensions (listing filters files by them).
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff")

# Pillow may only identify these formats: its other plugins (TGA, ...) have weak magic
# numbers and would "recognise" random bytes.
_PIL_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "WEBP", "TIFF")
_TF_NOISE = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\]")
_EXIF_ORIENTATION = 0x0112
_MAX_ERROR_CHARS = 500


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def content_sha256(encoded: EncodedImage) -> str:
    """The input's content hash, as ImageItem.sha256 has it: of the encoded bytes, or of the
    raw pixel buffer (``np.ascontiguousarray(pixels).tobytes()``) for TFDS inputs."""
    if encoded.data is not None:
        return sha256_hex(encoded.data)
    if encoded.pixels is not None:
        return sha256_hex(np.ascontiguousarray(np.asarray(encoded.pixels)).tobytes())
    raise ValueError("input has neither encoded data nor pixels")


def _check_channels(channels: int) -> None:
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels={channels!r} is not supported: use 1 (grayscale) or 3 (RGB)")


def _check_max_pixels(max_pixels: int) -> None:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels={max_pixels!r} must be a positive int (pixel count)")


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"image has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ValueError(
            f"image is {width}x{height} = {width * height} pixels, more than "
            f"max_pixels={max_pixels}: refused before decoding (possible decompression bomb)"
        )


def _scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """round(v * 255 / 65535) for 16-bit samples (65535 -> 255, 257 -> 1)."""
    v = np.clip(values.astype(np.int64), 0, 65535)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _composite_over_white(pixels: np.ndarray) -> np.ndarray:
    """[H, W, C+1] uint8 with alpha last -> [H, W, C] composited over a white background."""
    colour = pixels[..., :-1].astype(np.uint32)
    alpha = pixels[..., -1:].astype(np.uint32)
    return ((colour * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma with Pillow's fixed-point rounding (same as Image.convert("L"))."""
    c = rgb.astype(np.uint32)
    y = (c[..., 0] * 19595 + c[..., 1] * 38470 + c[..., 2] * 7471 + 0x8000) >> 16
    return y.astype(np.uint8)[..., None]


def convert_pixels(pixels: np.ndarray, *, channels: int) -> np.ndarray:
    """Bring decoded pixels to uint8 [H, W, channels].

    Accepts [H, W] or [H, W, C] with C in 1 (gray), 2 (gray + alpha), 3 (RGB), 4 (RGBA);
    dtype uint8, bool, uint16 or other integers (taken as 16-bit samples, scaled with
    rounding). Alpha is composited over white. Floating-point pixels are refused.
    """
    _check_channels(channels)
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"pixels of shape {arr.shape} are not an image: expected [H, W] or [H, W, C] "
            "with C in 1, 2, 3, 4"
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint8:
        pass
    elif np.issubdtype(arr.dtype, np.integer):
        arr = _scale_16_to_8(arr)
    else:
        raise ValueError(f"pixels of dtype {arr.dtype} are not supported: use uint8 or uint16")
    if arr.shape[-1] in (2, 4):
        arr = _composite_over_white(arr)
    if arr.shape[-1] == channels:
        return np.ascontiguousarray(arr)
    if channels == 1:
        return _luma(arr)
    return np.ascontiguousarray(np.repeat(arr, 3, axis=-1))


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation 1..8 to [H, W, C] pixels, as PIL.ImageOps.exif_transpose."""
    if orientation == 2:
        out = pixels[:, ::-1]
    elif orientation == 3:
        out = pixels[::-1, ::-1]
    elif orientation == 4:
        out = pixels[::-1]
    elif orientation == 5:
        out = pixels.transpose(1, 0, 2)
    elif orientation == 6:
        out = np.rot90(pixels, k=-1)
    elif orientation == 7:
        out = pixels[::-1, ::-1].transpose(1, 0, 2)
    elif orientation == 8:
        out = np.rot90(pixels, k=1)
    else:  # 1, absent or invalid: as stored
        return pixels
    return np.ascontiguousarray(out)


def short_error(error: BaseException) -> str:
    """``Type: message`` without TF's function-node noise, cut to a sane length."""
    text = _TF_NOISE.sub("", str(error)).strip() or repr(error)
    if len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS] + "..."
    return f"{type(error).__name__}: {text}"


def _allow_pillow(max_pixels: int) -> None:
    """Pillow refuses images above 2x Image.MAX_IMAGE_PIXELS in Image.open; raise its limit
    when source.max_pixels is higher, so that the configured limit is the one that counts."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and max_pixels > limit:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _open_header(data: bytes) -> Image.Image:
    """Open lazily with Pillow (parses the header only) or say why this is no image."""
    try:
        return Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
    except Image.DecompressionBombError as e:
        raise ValueError(
            f"refused before decoding (possible decompression bomb): {e}; raise Pillow's "
            "Image.MAX_IMAGE_PIXELS too if such images are legitimate"
        ) from e
    except Exception as e:
        head = bytes(data[:16])
        raise ValueError(
            f"not a recognised image ({len(data)} bytes starting with {head!r}); "
            f"supported formats: {', '.join(IMAGE_EXTENSIONS)}"
        ) from e


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png_chunks(data: bytes) -> None:
    """Verify every PNG chunk's CRC up to IEND. libpng (tf.io) accepts some corrupt chunks;
    a CRC mismatch means the file was damaged, so its pixels cannot be trusted."""
    pos = len(_PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 8 + length
        if end + 4 > len(data):
            return  # truncated: the decoders report it
        kind = data[pos + 4 : pos + 8]
        crc = int.from_bytes(data[end : end + 4], "big")
        if zlib.crc32(data[pos + 4 : end]) & 0xFFFFFFFF != crc:
            raise ValueError(f"corrupt PNG: chunk {kind.decode('latin-1')!r} fails its CRC check")
        if kind == b"IEND":
            return
        pos = end + 4


def _exif_orientation(img: Image.Image) -> int:
    try:
        if img.format == "PNG":
            # PngImageFile.getexif() decodes the whole image to look for an eXIf chunk
            # after the pixel data: use only an eXIf chunk seen in the header.
            raw = img.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = img.getexif()
        return int(exif.get(_EXIF_ORIENTATION, 1))
    except Exception:  # broken EXIF must not cost the image: keep it as stored
        return 1


def _decode_with_tf(data: bytes, img: Image.Image) -> np.ndarray | None:
    """tf.io for what it decodes fully and fast; None when Pillow must do it."""
    fmt = img.format
    if fmt in ("JPEG", "MPO") and img.mode in ("L", "RGB"):
        op, kwargs = "jpeg", {}
    elif fmt == "PNG":
        # IHDR bit depth sits at byte 24; 16-bit PNGs are decoded as uint16 and scaled.
        op, kwargs = "png", {"sixteen": len(data) > 24 and data[24] == 16}
    elif fmt == "WEBP" and not getattr(img, "is_animated", False):
        op, kwargs = "webp", {}
    else:
        return None
    import tensorflow as tf

    with tf.device("/CPU:0"):  # decode ops are CPU-only; keep their outputs off the GPU
        if op == "jpeg":
            out = tf.io.decode_jpeg(data, channels=0, dct_method="INTEGER_ACCURATE")
        elif op == "png":
            out = tf.io.decode_png(
                data, channels=0, dtype=tf.uint16 if kwargs["sixteen"] else tf.uint8
            )
        else:
            out = tf.io.decode_webp(data, channels=0)[0]
        pixels = out.numpy()
    if pixels.shape[:2] != (img.height, img.width):
        raise ValueError(
            f"tf.io decoded {pixels.shape[1]}x{pixels.shape[0]} but the header says "
            f"{img.width}x{img.height}"
        )
    return pixels


def _decode_with_pillow(img: Image.Image) -> np.ndarray:
    """Pillow for everything else; the first frame of animations."""
    img.seek(0)
    mode = img.mode
    if mode == "F":
        raise ValueError("32-bit floating-point images (Pillow mode F) are not supported")
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I: 16-bit (or int32) grayscale
        img.load()
        return np.asarray(img)
    transparent = "transparency" in img.info
    if mode in ("LA", "La") or (mode == "L" and transparent):
        img = img.convert("LA")
    elif mode in ("RGBA", "RGBa", "PA") or transparent:
        img = img.convert("RGBA")
    elif mode in ("L", "1"):
        img = img.convert("L")
    else:  # RGB, P, CMYK, YCbCr, LAB, HSV, ...
        img = img.convert("RGB")
    return np.asarray(img)


def decode_image(data: bytes, *, channels: int, max_pixels: int) -> np.ndarray:
    """Decode encoded image bytes to uint8 [H, W, channels] (CPU only).

    Formats: JPEG (EXIF orientation applied, CMYK too), PNG (8/16-bit, palette, alpha),
    GIF (first frame), BMP, WebP (alpha, animated: first frame), TIFF. Alpha is composited
    over white; 16-bit samples are scaled to 8 bits with rounding.

    Raises:
        ValueError: empty input, not an image, an image larger than ``max_pixels``
            (checked from the header, before any pixel is decoded), a PNG chunk failing
            its CRC, or undecodable data.
    """
    _check_channels(channels)
    _check_max_pixels(max_pixels)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ValueError("empty input (0 bytes)")
    _allow_pillow(max_pixels)
    img = _open_header(data)
    _check_size(img.width, img.height, max_pixels)
    if img.format == "PNG" and data.startswith(_PNG_SIGNATURE):
        _check_png_chunks(data)
    orientation = _exif_orientation(img)
    try:
        pixels = _decode_with_tf(data, img)
    except Exception as tf_error:  # corrupt for libjpeg/libpng: let Pillow try once more
        try:
            pixels = _decode_with_pillow(img)
        except Exception as e:
            raise ValueError(f"cannot decode {img.format}: {short_error(tf_error)}") from e
    if pixels is None:
        try:
            pixels = _decode_with_pillow(img)
        except Exception as e:
            raise ValueError(f"cannot decode {img.format}: {short_error(e)}") from e
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return convert_pixels(_apply_orientation(pixels, orientation), channels=channels)


def to_image_item(
    encoded: EncodedImage,
    *,
    input_size: tuple[int, int],
    channels: int,
    resize_policy: str,
    max_pixels: int,
) -> ImageItem:
    """Decode (or take the TFDS pixels of) one input and resize it to ``input_size``.

    ``sha256`` is that of the encoded bytes, or of the raw pixel buffer as given
    (``np.ascontiguousarray(pixels).tobytes()``) for TFDS inputs.
    """
    if not isinstance(encoded, EncodedImage):
        raise TypeError(f"expected an EncodedImage, got {type(encoded).__name__}")
    if encoded.data is not None:
        digest = content_sha256(encoded)
        pixels = decode_image(encoded.data, channels=channels, max_pixels=max_pixels)
    elif encoded.pixels is not None:
        raw = np.asarray(encoded.pixels)
        digest = content_sha256(encoded)
        if raw.ndim in (2, 3):
            _check_size(int(raw.shape[1]), int(raw.shape[0]), max_pixels)
        pixels = convert_pixels(raw, channels=channels)
    else:
        raise ValueError("input has neither encoded data nor pixels")
    return ImageItem(
        key=encoded.key,
        source=encoded.source,
        pixels=resize(pixels, input_size, resize_policy),
        label=int(encoded.label),
        sha256=digest,
        original_height=int(pixels.shape[0]),
        original_width=int(pixels.shape[1]),
        boxes=encoded.boxes,
        metadata=encoded.metadata,
    )


def check_decode_options(
    *, input_size: tuple[int, int], channels: int, resize_policy: str, max_pixels: int
) -> None:
    """Raise ValueError / TypeError now for options :func:`to_image_item` would refuse on
    every input (DecodeImages checks them at pipeline construction, not on a worker)."""
    _check_channels(channels)
    _check_max_pixels(max_pixels)
    check_resize_args(np.zeros((1, 1, 3), np.uint8), tuple(input_size), resize_policy)
