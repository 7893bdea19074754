"""Image input: ReadImages / DecodeImages PTransforms and the pure decode functions.

``ReadImages`` turns files, TFRecords of ``tf.train.Example`` or a prepared TFDS dataset
into :class:`EncodedImage` records; ``DecodeImages`` turns those into fixed-size uint8
:class:`ImageItem` records. Both return a NamedTuple of two PCollections, the records and
the :class:`Failure` records of inputs that could not be read or decoded: nothing is
dropped silently (inputs = items + failures).

Decoding (:func:`decode_image`) runs on the CPU and never on an accelerator:

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
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import TaggedOutput
from PIL import Image

from pipeline.elements import EncodedImage, Failure, ImageItem

__all__ = [
    "FAILURES",
    "IMAGE_EXTENSIONS",
    "READ_KINDS",
    "RESIZE_POLICIES",
    "SKIPPED",
    "DecodeImages",
    "Decoded",
    "Read",
    "ReadImages",
    "SkipDone",
    "Skipped",
    "common_root",
    "content_sha256",
    "convert_pixels",
    "decode_image",
    "done_token",
    "glob_root",
    "key_for",
    "list_pattern",
    "printable",
    "read_done_index",
    "resize",
    "sha256_hex",
    "to_image_item",
    "write_done_index",
]

READ_KINDS = ("files", "tfrecord", "tfds")
RESIZE_POLICIES = ("resize", "center_crop")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff")
FAILURES = "failures"  # the tag of the failure output of every DoFn here

# Pillow may only identify these formats: its other plugins (TGA, ...) have weak magic
# numbers and would "recognise" random bytes.
_PIL_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "WEBP", "TIFF")
_WILDCARDS = re.compile(r"[*?\[]")
_TF_NOISE = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\]")
_EXIF_ORIENTATION = 0x0112
_MAX_ERROR_CHARS = 500


# ----------------------------------------------------------------------------- pure helpers


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


def done_token(key: str, sha256: str) -> str:
    """Identity of a done input in the incremental index: its key and content hash."""
    text = f"{key}\0{sha256}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()[:32]


def printable(text: str) -> str:
    """``text`` as valid Unicode: file names that are not UTF-8 (Python keeps their bytes as
    lone surrogates) get those bytes as ``\\xNN``, so keys and sources can go into JSON and
    TFRecords. Valid text is returned unchanged."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = text.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "backslashreplace")


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


def _short_error(error: BaseException) -> str:
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
            raise ValueError(f"cannot decode {img.format}: {_short_error(tf_error)}") from e
    if pixels is None:
        try:
            pixels = _decode_with_pillow(img)
        except Exception as e:
            raise ValueError(f"cannot decode {img.format}: {_short_error(e)}") from e
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return convert_pixels(_apply_orientation(pixels, orientation), channels=channels)


def _check_resize_args(pixels: np.ndarray, size: tuple[int, int], policy: str) -> None:
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


def resize(pixels: np.ndarray, size: tuple[int, int], policy: str) -> np.ndarray:
    """Resize uint8 [H, W, C] pixels to ``size`` = (height, width); returns uint8.

    Policies (Pillow bilinear, antialiased when shrinking, half-pixel centres):
      "resize":      stretch to ``size``; the aspect ratio is not kept.
      "center_crop": scale so the image covers ``size`` (for a square target: the shorter
                     side becomes the target's) and take the centre; resampled in one
                     step from the matching centre box of the original.
    """
    _check_resize_args(pixels, size, policy)
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    out_h, out_w = int(size[0]), int(size[1])
    gray = pixels.shape[-1] == 1
    img = Image.fromarray(pixels[..., 0] if gray else pixels, mode="L" if gray else "RGB")
    if policy == "resize":
        box = (0.0, 0.0, float(width), float(height))
    else:
        scale = max(out_h / height, out_w / width)
        box_w, box_h = out_w / scale, out_h / scale
        left, top = (width - box_w) / 2.0, (height - box_h) / 2.0
        box = (left, top, left + box_w, top + box_h)
    out = np.asarray(img.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box))
    return np.ascontiguousarray(out[..., None] if gray else out)


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
    )


# ------------------------------------------------------------------------ file patterns


def _split_patterns(pattern: str) -> list[str]:
    patterns = [p.strip() for p in pattern.split(",") if p.strip()]
    if not patterns:
        raise ValueError(
            f"pattern={pattern!r} names no files: give a glob such as '/data/imgs/**/*.jpg' "
            "(several separated by commas)"
        )
    return patterns


def _is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) is None


def _normalise_pattern(pattern: str) -> str:
    """Absolute posix local patterns; a trailing '/' means everything below (``dir/**``)."""
    if _is_local(pattern):
        trailing = pattern.endswith(("/", os.sep))
        pattern = os.path.abspath(pattern).replace(os.sep, "/")
        if trailing:
            pattern = pattern.rstrip("/") + "/"
    if pattern.endswith("/"):
        pattern += "**"
    return pattern


def glob_root(pattern: str) -> str:
    """The fixed directory part of a glob: up to the last '/' before the first wildcard.

    "/data/imgs/**/*.jpg" -> "/data/imgs/"; "gs://b/x/a*.png" -> "gs://b/x/";
    a pattern without wildcards (one file) -> its directory.
    """
    m = _WILDCARDS.search(pattern)
    prefix = pattern[: m.start()] if m else pattern
    return prefix[: prefix.rfind("/") + 1]


def common_root(patterns: Sequence[str]) -> str:
    """The deepest directory holding every pattern's :func:`glob_root` ('' when they share
    none, e.g. a local and a gs:// pattern). ReadImages keys files relative to it, so two
    different files never share a key ("/d/a/*,/d/b/*": "a/x.jpg" and "b/x.jpg")."""
    roots = [glob_root(p) for p in patterns]
    prefix = os.path.commonprefix(roots)
    return prefix[: prefix.rfind("/") + 1]


def _relative_key(path: str, root: str) -> str:
    if root and path.startswith(root) and len(path) > len(root):
        return path[len(root) :]
    return path


def key_for(path: str, root: str) -> str:
    """Stable key of ``path``: relative to ``root``, posix separators.

    ``root`` is a glob (its :func:`glob_root` is used), a directory, or the path itself (a
    pattern naming one file: the key is the file name).
    "/data/imgs/a/b.jpg" under "/data/imgs/**/*.jpg" -> "a/b.jpg".
    """
    path = path.replace("\\", "/") if _is_local(path) else path
    root = root.replace("\\", "/") if _is_local(root) else root
    if _WILDCARDS.search(root):
        root = glob_root(root)
    elif path == root:
        return path.rsplit("/", 1)[-1]
    elif not root.endswith("/"):
        root += "/"
    if not path.startswith(root) or len(path) == len(root):
        raise ValueError(f"path {path!r} is not below the pattern root {root!r}")
    return path[len(root) :]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Glob -> regex: '*' and '?' stay within a directory, '**' crosses directories and
    '**/' also matches no directory at all ('a/**/*.jpg' matches 'a/x.jpg')."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            j = pattern.find("]", j)
            if j < 0:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = j + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _has_extension(path: str, extensions: tuple[str, ...] | None) -> bool:
    if extensions is None:
        return True
    return path.lower().endswith(tuple("." + e.lower().lstrip(".") for e in extensions))


def _iter_candidates(pattern: str) -> Iterator[str]:
    """Every file path the pattern matches, lazily where the filesystem allows.

    Locally the tree is walked here (not with Beam's listing, which silently drops dangling
    symlinks: they must surface as read failures). Elsewhere one Beam listing of the root.
    """
    if not _WILDCARDS.search(pattern):
        if _is_local(pattern):
            if os.path.isdir(pattern):
                raise ValueError(
                    f"pattern {pattern!r} is a directory: use {pattern.rstrip('/')}/** "
                    "to read the images below it"
                )
            if os.path.lexists(pattern):
                yield pattern
        else:
            for meta in FileSystems.match([pattern])[0].metadata_list:
                yield meta.path
        return
    regex = _glob_regex(pattern)
    root = glob_root(pattern)
    if _is_local(pattern):
        rest = pattern[len(root) :]
        max_depth = None if "**" in rest else rest.count("/")  # no '**': walk no deeper
        for dirpath, dirs, files in os.walk(root or "."):
            rel = os.path.relpath(dirpath, root or ".")
            depth = 0 if rel == "." else rel.count(os.sep) + 1
            if max_depth is not None and depth >= max_depth:
                dirs[:] = []
            dirs.sort()
            base = dirpath.replace(os.sep, "/").rstrip("/") + "/"
            for name in sorted(files):
                path = base + name
                if regex.match(path):
                    yield path
    else:
        for meta in FileSystems.match([root + "**"])[0].metadata_list:
            if not meta.path.endswith("/") and regex.match(meta.path):
                yield meta.path


def list_pattern(
    pattern: str, *, extensions: tuple[str, ...] | None = IMAGE_EXTENSIONS
) -> Iterator[tuple[str, str]]:
    """(path, key) of the files a glob matches with an allowed extension (None: all).

    Raises ValueError when the pattern matches no such file.
    """
    pattern = _normalise_pattern(pattern)
    seen = skipped = 0
    for path in _iter_candidates(pattern):
        if _has_extension(path, extensions):
            seen += 1
            yield path, key_for(path, pattern)
        else:
            skipped += 1
    if not seen:
        raise ValueError(_no_match_message(pattern, skipped, extensions))


def _no_match_message(pattern: str, skipped: int, extensions: tuple[str, ...] | None) -> str:
    detail = (
        f"{skipped} file(s) matched but none has an image extension {extensions}"
        if skipped
        else "no file matched"
    )
    return f"pattern {pattern!r} matches no image file ({detail}): check the path and glob"


def _check_pattern_matches(pattern: str, extensions: tuple[str, ...] | None) -> None:
    """Fail at pipeline construction, not after workers started, for an empty pattern.

    Local: stops at the first matching image file. Elsewhere one cheap limited listing
    (the extension check then happens when the files are listed for real).
    """
    pattern = _normalise_pattern(pattern)
    if _is_local(pattern):
        next(list_pattern(pattern, extensions=extensions))
        return
    candidates = [pattern]
    if "**/" in pattern:  # '**/' may match no directory: try that reading too
        candidates.append(pattern.replace("**/", "", 1))
    try:
        results = FileSystems.match(candidates, limits=[1] * len(candidates))
    except Exception as e:
        raise ValueError(f"cannot list pattern {pattern!r}: {_short_error(e)}") from e
    if not any(r.metadata_list for r in results):
        raise ValueError(_no_match_message(pattern, 0, extensions))


def _check_files_exist(pattern: str) -> None:
    """For TFRecord patterns: at least one file (any name)."""
    pattern = _normalise_pattern(pattern)
    try:
        found = FileSystems.match([pattern], limits=[1])[0].metadata_list
    except Exception as e:
        raise ValueError(f"cannot list pattern {pattern!r}: {_short_error(e)}") from e
    if not found:
        raise ValueError(f"TFRecord pattern {pattern!r} matches no file: check the path")


# ---------------------------------------------------------------------------- Beam DoFns


# process() methods carry no return annotation on purpose: Beam turns it into an output
# type hint, and a Union with TaggedOutput confuses its checks.


class _ListFilesFn(beam.DoFn):
    """pattern -> (path, key) for every image file it matches; keys relative to ``root``
    (the patterns' common root) and made printable."""

    def __init__(self, extensions: tuple[str, ...] | None, root: str):
        self._extensions = extensions
        self._root = root

    def process(self, pattern: str):
        for path, _ in list_pattern(pattern, extensions=self._extensions):
            yield _wire_path(path), printable(_relative_key(path, self._root))


def _wire_path(path: str) -> str | bytes:
    """A path Beam's coders can carry: a local name that is not UTF-8 travels as bytes."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


class _ReadFileFn(beam.DoFn):
    """(path, key) -> EncodedImage; unreadable files -> Failure at stage "read"."""

    def __init__(self) -> None:
        self._failed = beam.metrics.Metrics.counter("sources", "read_failures")

    def process(self, element: tuple[str | bytes, str]):
        wire, key = element
        path = os.fsdecode(wire) if isinstance(wire, bytes) else wire
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read()
        except Exception as e:  # dangling symlink, loop, permission, vanished file, ...
            self._failed.inc()
            failure = Failure(key, printable(path), "read", printable(_short_error(e)))
            yield TaggedOutput(FAILURES, failure)
            return
        yield EncodedImage(key=key, source=printable(path), data=data)


def _feature_values(example, name: str) -> list:
    feature = example.features.feature.get(name) if name else None
    if feature is None:
        return []
    kind = feature.WhichOneof("kind")
    return list(getattr(feature, kind).value) if kind else []


class _ParseExampleFn(beam.DoFn):
    """(file, serialized tf.train.Example) -> EncodedImage; bad records -> Failure "read"."""

    def __init__(self, *, image_key: str, label_key: str, key_key: str):
        self._image_key = image_key
        self._label_key = label_key
        self._key_key = key_key
        self._failed = beam.metrics.Metrics.counter("sources", "read_failures")

    def process(self, element: tuple[str, bytes]):
        import tensorflow as tf

        filename, record = element
        key = sha256_hex(record)  # for records too broken to name
        try:
            example = tf.train.Example.FromString(record)
            key = self._given_key(example) or key
            yield self._to_image(example, filename)
        except Exception as e:
            self._failed.inc()
            yield TaggedOutput(FAILURES, Failure(key, filename, "read", _short_error(e)))

    def _given_key(self, example) -> str:
        values = _feature_values(example, self._key_key)
        if not values:
            return ""
        value = values[0]
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    def _to_image(self, example, filename: str) -> EncodedImage:
        images = _feature_values(example, self._image_key)
        if not images or not isinstance(images[0], bytes):
            present = sorted(example.features.feature.keys())
            raise ValueError(
                f"record has no bytes feature {self._image_key!r} (features: {present}); "
                "set image_key to the feature holding the encoded image"
            )
        labels = _feature_values(example, self._label_key)
        if labels and not isinstance(labels[0], int):
            raise ValueError(
                f"label feature {self._label_key!r} holds {type(labels[0]).__name__}, not "
                "int64: set label_key to an int64 feature, or to '' for no labels"
            )
        # key_key when the record has it, else the image's sha256: stable, unique per content
        key = self._given_key(example) or sha256_hex(images[0])
        return EncodedImage(
            key=key, source=filename, data=images[0], label=int(labels[0]) if labels else -1
        )


def _to_numpy(value) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _scalar_text(value) -> str:
    """A scalar string tensor / array / bytes as str."""
    value = _to_numpy(value)
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class _TfdsExampleFn(beam.DoFn):
    """TFDS example dict -> EncodedImage with decoded pixels; bad ones -> Failure "read"."""

    def __init__(
        self,
        *,
        name: str,
        split: str,
        offsets: dict[str, tuple[str, int]],
        image_feature: str,
        label_feature: str,
    ):
        self._name = name
        self._split = split
        self._offsets = offsets
        self._image_feature = image_feature
        self._label_feature = label_feature
        self._failed = beam.metrics.Metrics.counter("sources", "read_failures")

    def _key(self, tfds_id: str, pixels: np.ndarray) -> str:
        """name/split/index within the split (as tfds.load orders it), from the tfds_id
        "<shard file>__<index in shard>"; a content hash when the id is unknown."""
        shard, _, index = tfds_id.rpartition("__")
        place = self._offsets.get(shard.rsplit("/", 1)[-1])
        if place is not None and index.isdigit():
            return f"{self._name}/{place[0]}/{place[1] + int(index)}"
        return f"{self._name}/{self._split}/{sha256_hex(np.ascontiguousarray(pixels).tobytes())}"

    def process(self, example: dict):
        tfds_id = ""
        try:
            if "tfds_id" in example:
                tfds_id = _scalar_text(example["tfds_id"])
            pixels = _to_numpy(example[self._image_feature])
            label = -1
            if self._label_feature and self._label_feature in example:
                label = int(_to_numpy(example[self._label_feature]))
            key = self._key(tfds_id, pixels)
        except Exception as e:
            self._failed.inc()
            key = f"{self._name}/{self._split}/{tfds_id or 'unknown'}"
            failure = Failure(key, f"tfds:{self._name}:{tfds_id}", "read", _short_error(e))
            yield TaggedOutput(FAILURES, failure)
            return
        yield EncodedImage(
            key=key, source=f"tfds:{self._name}:{tfds_id}", pixels=pixels, label=label
        )


class _DecodeFn(beam.DoFn):
    """EncodedImage -> ImageItem; any error -> Failure at stage "decode"."""

    def __init__(
        self, *, input_size: tuple[int, int], channels: int, resize_policy: str, max_pixels: int
    ):
        self._kwargs = {
            "input_size": tuple(input_size),
            "channels": channels,
            "resize_policy": resize_policy,
            "max_pixels": max_pixels,
        }
        self._decoded = beam.metrics.Metrics.counter("sources", "decoded")
        self._failed = beam.metrics.Metrics.counter("sources", "decode_failures")

    def process(self, element: EncodedImage):
        try:
            item = to_image_item(element, **self._kwargs)
        except Exception as e:
            self._failed.inc()
            key = str(getattr(element, "key", "?"))
            source = str(getattr(element, "source", "?"))
            yield TaggedOutput(FAILURES, Failure(key, source, "decode", _short_error(e)))
            return
        self._decoded.inc()
        yield item


def _image_sort_key(image: EncodedImage) -> tuple[str, str]:
    return image.key, image.source


def _listing_sort_key(path_key: tuple[str | bytes, str]) -> tuple[str, str]:
    path = path_key[0]
    return path_key[1], printable(os.fsdecode(path) if isinstance(path, bytes) else path)


def _explode(values: list) -> list:
    return values


def _smallest(pcoll, limit: int, sort_key, label: str):
    """The ``limit`` elements with the smallest sort keys (deterministic smoke subsets)."""
    return (
        pcoll
        | f"{label}Smallest" >> beam.combiners.Top.Of(limit, key=sort_key, reverse=True)
        | f"{label}Explode" >> beam.FlatMap(_explode)
    )


# ---------------------------------------------------------------------------- PTransforms


class Read(NamedTuple):
    """ReadImages' result: the images, and inputs that could not be read (stage "read")."""

    images: beam.PCollection  # of EncodedImage
    failures: beam.PCollection  # of Failure


class Decoded(NamedTuple):
    """DecodeImages' result: model-ready items, and inputs that failed (stage "decode")."""

    items: beam.PCollection  # of ImageItem
    failures: beam.PCollection  # of Failure


class ReadImages(beam.PTransform):
    """PBegin -> :class:`Read` (images: PCollection[EncodedImage], failures).

    kind="files": ``pattern`` is one or more comma-separated globs on any Beam filesystem
    (local, gs://, s3://); ``*`` stays within a directory, ``**`` recurses (``a/**/*.jpg``
    includes ``a/x.jpg``), a trailing ``/`` means everything below. Only files with an
    image extension (``extensions``, case-insensitive; None: all) are read; a file matched by
    several patterns is read once. key = path relative to the patterns' common root
    (:func:`common_root`; for one pattern its fixed root, as :func:`key_for`), so two files
    never share a key; names that are not UTF-8 keep their bytes as ``\\xNN``
    (:func:`printable`); label -1. A pattern matching nothing fails at construction.
    Unreadable files (dangling symlinks, symlink loops, permissions) become failures.

    kind="tfrecord": ``pattern`` globs TFRecord files of tf.train.Example: the image bytes
    from ``image_key``, the int64 label from ``label_key`` (-1 when absent; "" for none),
    key from ``key_key`` when given and present, else the sha256 of the image bytes;
    source = the shard file. Records without the image -> failures.

    kind="tfds": a prepared TFDS dataset (nothing is downloaded) read with
    tfds.beam.ReadFromTFDS; pixels decoded by TFDS (data=None); key
    "<dataset>/<split>/<index within the split>" from the example's tfds_id.

    ``limit``: keep only the N inputs with the smallest keys (a deterministic smoke subset;
    for files it is applied to the listing, before reading; otherwise to read images).
    """

    def __init__(
        self,
        *,
        kind: str,
        pattern: str = "",
        image_key: str = "image/encoded",
        label_key: str = "image/class/label",
        key_key: str = "",
        tfds_name: str = "",
        tfds_split: str = "train",
        tfds_data_dir: str | None = None,
        tfds_image_feature: str = "image",
        tfds_label_feature: str = "label",
        limit: int | None = None,
        extensions: tuple[str, ...] | None = IMAGE_EXTENSIONS,
    ):
        super().__init__()
        if kind not in READ_KINDS:
            raise ValueError(f"kind={kind!r} is unknown: use one of {READ_KINDS}")
        if kind in ("files", "tfrecord"):
            _split_patterns(pattern)
        elif not tfds_name:
            raise ValueError("kind='tfds' needs tfds_name (e.g. 'mnist' or 'my_dataset')")
        if kind == "tfrecord" and not image_key:
            raise ValueError("kind='tfrecord' needs image_key (the encoded image feature)")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise ValueError(f"limit={limit!r} must be a positive int or None (all inputs)")
        self._kind = kind
        self._pattern = pattern
        self._image_key = image_key
        self._label_key = label_key
        self._key_key = key_key
        self._tfds = (tfds_name, tfds_split, tfds_data_dir, tfds_image_feature, tfds_label_feature)
        self._limit = limit
        self._extensions = tuple(extensions) if extensions is not None else None

    def expand(self, pbegin: beam.pvalue.PBegin) -> Read:
        if self._kind == "files":
            return self._expand_files(pbegin)
        if self._kind == "tfrecord":
            return self._expand_tfrecord(pbegin)
        return self._expand_tfds(pbegin)

    def _expand_files(self, pbegin) -> Read:
        patterns = [_normalise_pattern(p) for p in _split_patterns(self._pattern)]
        for pattern in patterns:
            _check_pattern_matches(pattern, self._extensions)
        root = common_root(patterns)
        listed = (
            pbegin
            | "Patterns" >> beam.Create(patterns)
            | "ListFiles" >> beam.ParDo(_ListFilesFn(self._extensions, root))
            # one read per file even when patterns overlap; also spreads the reads
            | "OnePerPath" >> beam.CombinePerKey(min)
        )
        if self._limit is not None:
            listed = _smallest(listed, self._limit, _listing_sort_key, "Limit") | (
                "SpreadLimited" >> beam.Reshuffle()
            )
        read = listed | "ReadFiles" >> beam.ParDo(_ReadFileFn()).with_outputs(
            FAILURES, main="images"
        )
        return Read(images=read.images, failures=read[FAILURES])

    def _expand_tfrecord(self, pbegin) -> Read:
        from apache_beam.io.tfrecordio import ReadAllFromTFRecord

        patterns = [_normalise_pattern(p) for p in _split_patterns(self._pattern)]
        for pattern in patterns:
            _check_files_exist(pattern)
        parsed = (
            pbegin
            | "Patterns" >> beam.Create(patterns)
            | "ReadTFRecords" >> ReadAllFromTFRecord(with_filename=True)
            | "ParseExamples"
            >> beam.ParDo(
                _ParseExampleFn(
                    image_key=self._image_key, label_key=self._label_key, key_key=self._key_key
                )
            ).with_outputs(FAILURES, main="images")
        )
        images = parsed.images
        if self._limit is not None:
            images = _smallest(images, self._limit, _image_sort_key, "Limit")
        return Read(images=images, failures=parsed[FAILURES])

    def _expand_tfds(self, pbegin) -> Read:
        import tensorflow_datasets as tfds

        name, split, data_dir, image_feature, label_feature = self._tfds
        builder = _prepared_builder(name, data_dir)
        _check_tfds_features(builder, split, image_feature)
        offsets = _tfds_shard_offsets(builder)
        label = label_feature if label_feature in builder.info.features else ""
        examples = pbegin | "ReadFromTFDS" >> tfds.beam.ReadFromTFDS(
            builder, split=split, read_config=tfds.ReadConfig(add_tfds_id=True)
        )
        converted = examples | "ToEncodedImage" >> beam.ParDo(
            _TfdsExampleFn(
                name=builder.name,
                split=split,
                offsets=offsets,
                image_feature=image_feature,
                label_feature=label,
            )
        ).with_outputs(FAILURES, main="images")
        images = converted.images
        if self._limit is not None:
            images = _smallest(images, self._limit, _image_sort_key, "Limit")
        return Read(images=images, failures=converted[FAILURES])


def _prepared_builder(name: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    where = f"data_dir={data_dir!r}" if data_dir else "the default TFDS data_dir"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:
        raise ValueError(
            f"TFDS dataset {name!r} not found in {where}: "
            f"{_short_error(e).splitlines()[0]}; prepare it first "
            "(`tfds build` or builder.download_and_prepare()) or set tfds_data_dir"
        ) from e
    if not builder.is_prepared():
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in {where} (nothing is downloaded at run "
            "time): run `tfds build` / tfds.builder(name).download_and_prepare() first, or "
            "set tfds_data_dir to where it was prepared"
        )
    return builder


def _check_tfds_features(builder, split: str, image_feature: str) -> None:
    features = builder.info.features
    if image_feature not in features:
        raise ValueError(
            f"TFDS dataset {builder.name!r} has no feature {image_feature!r} "
            f"(features: {sorted(features.keys())}): set tfds_image_feature"
        )
    try:
        _ = builder.info.splits[split]
    except Exception as e:
        raise ValueError(
            f"TFDS dataset {builder.name!r} has no split {split!r} "
            f"(splits: {sorted(builder.info.splits.keys())}): set tfds_split"
        ) from e


def _tfds_shard_offsets(builder) -> dict[str, tuple[str, int]]:
    """shard file name -> (split name, index of its first example within the split)."""
    offsets: dict[str, tuple[str, int]] = {}
    for split_name, info in builder.info.splits.items():
        start = 0
        for instruction in info.file_instructions:
            offsets[os.path.basename(os.fspath(instruction.filename))] = (split_name, start)
            start += int(instruction.examples_in_shard)
    return offsets


class DecodeImages(beam.PTransform):
    """PCollection[EncodedImage] -> :class:`Decoded` (items: PCollection[ImageItem], failures).

    Every input ends in exactly one output: an item at ``input_size`` (H, W) with
    ``channels`` channels, or a Failure at stage "decode" carrying the error message.
    """

    def __init__(
        self,
        *,
        input_size: tuple[int, int],
        channels: int,
        resize_policy: str,
        max_pixels: int,
    ):
        super().__init__()
        _check_channels(channels)
        _check_max_pixels(max_pixels)
        _check_resize_args(np.zeros((1, 1, 3), np.uint8), tuple(input_size), resize_policy)
        self._fn = _DecodeFn(
            input_size=tuple(input_size),
            channels=channels,
            resize_policy=resize_policy,
            max_pixels=max_pixels,
        )

    def expand(self, pcoll: beam.PCollection) -> Decoded:
        out = pcoll | "Decode" >> beam.ParDo(self._fn).with_outputs(FAILURES, main="items")
        return Decoded(items=out.items, failures=out[FAILURES])


# ------------------------------------------------------------------------ incremental runs

SKIPPED = "skipped"  # the tag of SkipDone's output of inputs already done


def write_done_index(path: str, tokens: Iterable[str]) -> int:
    """Write the incremental index (one :func:`done_token` per line); returns its size."""
    lines = sorted(set(tokens))
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write("".join(f"{t}\n" for t in lines).encode("ascii"))
    return len(lines)


def read_done_index(path: str) -> frozenset[str]:
    """The tokens written by :func:`write_done_index`."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return frozenset(f.read().decode("ascii").split())


class Skipped(NamedTuple):
    """SkipDone's result: inputs still to do, and the keys of those already done."""

    images: beam.PCollection  # of EncodedImage
    skipped: beam.PCollection  # of str (keys)


class _SkipDoneFn(beam.DoFn):
    """EncodedImage -> itself, or its key (tag "skipped") when (key, content hash) is in
    the index. Runs before decoding: a done image costs one hash, not a decode."""

    def __init__(self, index_path: str) -> None:
        self._index_path = index_path
        self._done: frozenset[str] = frozenset()

    def setup(self) -> None:
        self._done = read_done_index(self._index_path)

    def process(self, element: EncodedImage):
        try:
            token = done_token(element.key, content_sha256(element))
        except Exception:  # no content: DecodeImages reports it as a failure
            yield element
            return
        if token in self._done:
            yield TaggedOutput(SKIPPED, element.key)
        else:
            yield element


class SkipDone(beam.PTransform):
    """PCollection[EncodedImage] -> :class:`Skipped`: drop inputs whose (key, sha256) is in
    the index file at ``index_path`` (written by :func:`write_done_index`; each worker reads
    it once, so the pipeline graph stays small however many images are done)."""

    def __init__(self, index_path: str) -> None:
        super().__init__()
        if not isinstance(index_path, str) or not index_path:
            raise ValueError(f"index_path={index_path!r} must name the done-index file")
        self._fn = _SkipDoneFn(index_path)

    def expand(self, pcoll: beam.PCollection) -> Skipped:
        out = pcoll | "SkipDone" >> beam.ParDo(self._fn).with_outputs(SKIPPED, main="images")
        return Skipped(images=out.images, skipped=out[SKIPPED])
