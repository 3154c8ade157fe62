"""Decoding and encoding product images with Pillow, safely.

Decoding is capped: an image over :data:`MAX_PIXELS` pixels (a decompression bomb) or over
:data:`MAX_BYTES` bytes is refused with :class:`ImageTooLarge` before its pixels are loaded.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Largest accepted image, in pixels (width x height). 40 MP covers any real product photo.
MAX_PIXELS = 40_000_000
#: Largest accepted encoded image, in bytes.
MAX_BYTES = 64 * 1024 * 1024


class ImageDecodeError(ValueError):
    """The bytes are not a decodable image, or exceed the pixel/byte caps. The message is short and
    stable enough to record: ``empty file (0 bytes)``, ``not an image``, ``truncated (...)``,
    ``corrupt (...)``, or (as :class:`ImageTooLarge`) ``exceeds pixel cap: ...`` /
    ``exceeds byte cap: ...``."""


class ImageTooLarge(ImageDecodeError):
    """The image is over :data:`MAX_PIXELS` pixels or :data:`MAX_BYTES` bytes; refused unread."""


_PILLOW_BOMB = re.compile(r"\((\d+) pixels\)")


def _pixel_cap_error(pixels: int | None, size: tuple[int, int] | None = None) -> ImageTooLarge:
    dims = f"{size[0]}x{size[1]}, " if size else ""
    shown = f"{pixels:,} px" if pixels is not None else "more pixels than Pillow's own limit"
    return ImageTooLarge(f"exceeds pixel cap: {shown} ({dims}max {MAX_PIXELS:,})")


def decode_rgb(data: bytes) -> Image.Image:
    """Decode image bytes to an 8-bit RGB Pillow image.

    The size is read from the header first: an image over :data:`MAX_PIXELS` pixels (width x
    height) is refused before any pixel is decompressed, so a decompression bomb (e.g. a 900 KB PNG
    of 30000x30000 px) costs no memory. Alpha is composited on white; palette, greyscale, CMYK and
    16-bit modes are converted to RGB (see :func:`to_rgb`); EXIF orientation is applied.

    Raises ImageTooLarge (over the byte or pixel cap) or ImageDecodeError (empty, not an image,
    truncated, corrupt); the message says which (see :class:`ImageDecodeError`).
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    if len(data) > MAX_BYTES:
        raise ImageTooLarge(f"exceeds byte cap: {len(data):,} bytes (max {MAX_BYTES:,})")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise _pixel_cap_error(w * h, (w, h))
            im.load()
            im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's own limit (2 x Image.MAX_IMAGE_PIXELS) fired in Image.open, before our check.
        m = _PILLOW_BOMB.search(str(exc))
        raise _pixel_cap_error(int(m.group(1)) if m else None) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not an image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        detail = str(exc).split("\n")[0][:200]
        kind = "truncated" if "truncated" in detail.lower() else "corrupt"
        raise ImageDecodeError(f"{kind} ({detail})") from exc


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    * 16-bit greyscale (``I;16*``, and ``I`` with values over 255) is scaled by 255/65535
      (value / 257, rounded), so 65535 -> 255 and 32896 -> 128; ``I`` within [0, 255] is kept.
    * Palette, ``LA``, ``PA`` and ``RGBA`` images are composited on white (255, 255, 255) by their
      alpha (palette transparency included).
    * Greyscale, CMYK, YCbCr and the rest use Pillow's conversion to RGB.
    """
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im).astype(np.float64)
        if im.mode.startswith("I;16") or (arr.size and arr.max() > 255):
            arr = arr / 257.0
        im = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB") if im.mode != "RGB" else im


def letterbox(im: Image.Image, width: int, height: int, fill=(255, 255, 255)) -> Image.Image:
    """Resize to fit inside width x height pixels keeping the aspect ratio, padding with ``fill``."""
    return ImageOps.pad(im, (width, height), method=Image.Resampling.LANCZOS, color=fill)


def to_array(im: Image.Image) -> np.ndarray:
    """RGB image -> uint8 array of shape (H, W, 3), values in [0, 255]."""
    return np.asarray(to_rgb(im), dtype=np.uint8)


def encode(im: Image.Image, fmt: str = "PNG") -> bytes:
    """Encode an image to bytes (PNG lossless by default; JPEG/WebP at quality 95)."""
    buf = io.BytesIO()
    fmt = fmt.upper()
    if fmt in ("JPEG", "JPG"):
        im.save(buf, "JPEG", quality=95)
    elif fmt == "WEBP":
        im.save(buf, "WEBP", quality=95)
    else:
        im.save(buf, "PNG", optimize=False)
    return buf.getvalue()
