"""Decoding and encoding product images with Pillow, safely.

Decoding is capped: an image over :data:`MAX_PIXELS` pixels (a decompression bomb) or over
:data:`MAX_BYTES` bytes is refused with :class:`ImageDecodeError` before its pixels are loaded.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Largest accepted image, in pixels (width x height). 40 MP covers any real product photo.
MAX_PIXELS = 40_000_000
#: Largest accepted encoded image, in bytes.
MAX_BYTES = 64 * 1024 * 1024


class ImageDecodeError(ValueError):
    """The bytes are not a decodable image, or exceed the pixel/byte caps."""


def decode_rgb(data: bytes) -> Image.Image:
    """Decode image bytes to an 8-bit RGB Pillow image.

    Alpha is composited on white; palette, greyscale, CMYK and 16-bit modes are converted to RGB;
    EXIF orientation is applied. Raises ImageDecodeError for empty, truncated, unidentifiable or
    over-cap images (the message says which).
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    if len(data) > MAX_BYTES:
        raise ImageDecodeError(f"file too large ({len(data)} bytes > {MAX_BYTES})")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageDecodeError(f"image too large ({w}x{h} pixels > {MAX_PIXELS})")
            im.load()
            im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"not a decodable image ({type(exc).__name__})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image ({exc})") from exc


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited on white (255,255,255)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 255 else 255.0
        im = Image.fromarray((arr / hi * 255).round().astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
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
