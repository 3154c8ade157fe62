"""Real broken and unusual files for the bad-input tests, made byte by byte (not a test module).

Every builder returns the file's bytes (or writes it) together with what a correct decoder must
produce, computed here with numpy from the source pixels, not with catalog_render.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int, rows_per_piece: int = 500) -> bytes:
    """A valid 8-bit greyscale PNG of ``width`` x ``height`` black pixels, built without ever
    holding its (width + 1) * height bytes of scanlines.

    The IDAT stream is a zlib stream made by hand: raw deflate of one piece of ``rows_per_piece``
    zero scanlines, ended with a full flush (which resets the compressor, so the same input gives
    the same bytes again), repeated; then the remaining rows; then an empty final block; then the
    Adler-32 of the whole scanline data, which for n zero bytes is ``((n % 65521) << 16) | 1``.
    A 30000 x 30000 image (900,000,000 pixels) is about 0.9 MB and takes milliseconds to build.
    """
    scanline = width + 1  # filter byte 0 (None) + one byte per pixel

    def piece(rows: int) -> bytes:
        co = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, no zlib header
        return co.compress(b"\x00" * (scanline * rows)) + co.flush(zlib.Z_FULL_FLUSH)

    full, rest = divmod(height, rows_per_piece)
    body = piece(rows_per_piece) * full + (piece(rest) if rest else b"")
    final_empty_block = b"\x03\x00"  # BFINAL=1, fixed Huffman, end-of-block only
    n = scanline * height
    adler = ((n % 65521) << 16) | 1
    idat = b"\x78\x9c" + body + final_empty_block + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def odd_photos(photo: np.ndarray) -> dict[str, tuple[bytes, np.ndarray, float]]:
    """Unusual but valid encodings of one real RGB photo (H, W, 3 uint8).

    Returns {kind: (file bytes, the RGB uint8 array a correct decoder yields, tolerance)}; the
    tolerance is the largest acceptable mean absolute difference per channel value (0 = exact).
    """
    h, w, _ = photo.shape
    rgb = photo.astype(np.int64)
    out: dict[str, tuple[bytes, np.ndarray, float]] = {}

    # CMYK JPEG, as print workflows export it: Pillow's RGB->CMYK is C=255-R, M=255-G, Y=255-B, K=0,
    # so the photo itself is what must come back (up to JPEG loss).
    out["cmyk"] = (encode(Image.fromarray(photo).convert("CMYK"), "JPEG", quality=95), photo, 3.0)

    # Greyscale PNG (ITU-R 601 luma, as Pillow's "L"): each grey value in all three channels.
    grey = ((rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114 + 500) // 1000).astype(np.uint8)
    out["grey"] = (encode(Image.fromarray(grey, "L"), "PNG"), np.repeat(grey[..., None], 3, axis=2), 0.0)

    # 16-bit greyscale PNG of a dark scan (values up to 127 * 257): 8-bit value = v / 257, so it
    # stays dark (a decoder that stretches by the image's own maximum brightens it).
    dark = grey // 2
    out["grey16"] = (encode(Image.fromarray(dark.astype(np.uint16) * 257), "PNG"), np.repeat(dark[..., None], 3, axis=2), 0.0)

    # RGBA PNG with a transparent border (a cut-out product): transparent pixels become white.
    alpha = np.zeros((h, w), np.uint8)
    alpha[h // 8 : h - h // 8, w // 8 : w - w // 8] = 255
    rgba = np.dstack([photo, alpha])
    expect = np.where(alpha[..., None] == 255, photo, np.uint8(255)).astype(np.uint8)
    out["rgba"] = (encode(Image.fromarray(rgba, "RGBA"), "PNG"), expect, 0.0)

    # Palette PNG, 32 colours, index 0 transparent: palette colours, index-0 pixels white.
    pal_im = Image.fromarray(photo).quantize(32)
    idx = np.asarray(pal_im)
    palette = np.array(pal_im.getpalette()[: 3 * 256], np.uint8).reshape(-1, 3)
    expect = palette[idx]
    expect[idx == 0] = 255
    out["palette"] = (encode(pal_im, "PNG", transparency=0), expect, 0.0)

    # A 67 x 800 px strip (extreme aspect ratio), plain RGB.
    strip = np.asarray(Image.fromarray(photo).resize((67, 800), Image.Resampling.BILINEAR))
    out["strip_67x800"] = (encode(Image.fromarray(strip), "PNG"), strip, 0.0)
    return out


def truncated(data: bytes) -> bytes:
    """The first half of a real image file (a transfer cut short)."""
    return data[: len(data) // 2]


NOT_AN_IMAGE = b"<html><body>404 Not Found</body></html>\n"  # what a broken CDN link downloads
