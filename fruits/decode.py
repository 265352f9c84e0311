"""Decoding and validation of photo bytes: pure functions, shared by the batch and streaming jobs.

A photo either becomes a ``(size, size, 3)`` float32 array ready for InceptionV3, or a
:class:`Rejection` with a short reason code. Nothing here raises on bad bytes, and the pixel
limit is checked from the header, before the full decode, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "REASONS",
    "Decoded",
    "ImageLimits",
    "Rejection",
    "decode_batch",
    "decode_image",
    "preprocess_input",
]

# Reason codes written to the quarantine table and to reports; the detail column says more.
REASONS = {
    "missing": "the file was deleted or replaced between its discovery and its reading",
    "empty": "the file has no bytes",
    "too_large_bytes": "the file is larger than images.max_bytes",
    "not_an_image": "the bytes are not an image format Pillow can identify",
    "too_many_pixels": "the declared width x height exceeds images.max_pixels",
    "zero_pixels": "the image declares a zero width or height",
    "truncated": "the image data ends early (an interrupted upload)",
    "corrupt": "the image header is readable but its data cannot be decoded",
    "unsupported_mode": "the pixel format cannot be converted to RGB",
}

# We enforce our own pixel limit before decoding; Pillow's global one would raise elsewhere.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str


@dataclass(frozen=True)
class Decoded:
    """An RGB photo resized to the model's input, values still in 0..255."""

    pixels: np.ndarray  # (size, size, 3) float32
    width: int  # original size, after EXIF rotation
    height: int


def decode_image(data: bytes | None, *, size: int, limits: ImageLimits) -> Decoded | Rejection:
    """Decode ``data`` into a ``size`` x ``size`` RGB array, or say why it cannot be used."""
    if data is None:
        return Rejection("missing", REASONS["missing"])
    if not data:
        return Rejection("empty", "0 bytes")
    if len(data) > limits.max_bytes:
        return Rejection("too_large_bytes", f"{len(data)} bytes > {limits.max_bytes}")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return Rejection("not_an_image", _describe_magic(data))
    except Exception as exc:  # Pillow raises many types on hostile headers
        return Rejection("not_an_image", _short(exc))
    width, height = image.size
    if width <= 0 or height <= 0:
        return Rejection("zero_pixels", f"{width}x{height}")
    if width * height > limits.max_pixels:
        return Rejection("too_many_pixels", f"{width}x{height} > {limits.max_pixels} pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
            rgb = _to_rgb(ImageOps.exif_transpose(image) or image)
    except _UnsupportedMode as exc:
        return Rejection("unsupported_mode", str(exc))
    except Exception as exc:  # truncated streams, bad Huffman tables, broken chunks...
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        return Rejection(reason, _short(exc))
    width, height = rgb.size  # after EXIF rotation
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return Decoded(pixels=np.asarray(rgb, dtype=np.float32), width=width, height=height)


def decode_batch(
    blobs: Sequence[bytes | None], *, size: int, limits: ImageLimits
) -> tuple[np.ndarray, list[Decoded | Rejection]]:
    """Decode many photos; returns the stacked good ones (N_ok, size, size, 3) and all results."""
    results = [decode_image(b, size=size, limits=limits) for b in blobs]
    good = [r.pixels for r in results if isinstance(r, Decoded)]
    stacked = np.stack(good) if good else np.zeros((0, size, size, 3), dtype=np.float32)
    return stacked, results


def preprocess_input(pixels: np.ndarray) -> np.ndarray:
    """InceptionV3's preprocessing (Keras' "tf" mode): 0..255 -> -1..1, without importing TF."""
    return pixels / np.float32(127.5) - np.float32(1.0)


class _UnsupportedMode(Exception):
    pass


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Fruits-360 photos sit on white: composite transparent pixels onto white, not black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit greyscale: scale to 8 bits ourselves; convert("RGB") would clip at 255.
        array = np.asarray(image, dtype=np.float64)
        top = float(array.max()) or 1.0
        grey = Image.fromarray((array * (255.0 / top)).clip(0, 255).astype(np.uint8), mode="L")
        return grey.convert("RGB")
    if mode in ("L", "P", "CMYK", "YCbCr", "1", "LAB", "HSV"):
        return image.convert("RGB")
    raise _UnsupportedMode(f"pixel mode {mode}")


def _describe_magic(data: bytes) -> str:
    head = data[:8]
    if head.startswith(b"%PDF"):
        return "PDF document"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "text, not an image"
    return f"unknown format (first bytes {head.hex()})"


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
