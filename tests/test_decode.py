"""Decoding and validation are pure: no Spark, real photos and generated bad bytes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fruits.decode import Decoded, ImageLimits, Rejection, decode_image, preprocess_input

from .conftest import real_photos

LIMITS = ImageLimits(max_bytes=1_000_000, max_pixels=4_000_000)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _reason(data: bytes) -> str:
    result = decode_image(data, size=99, limits=LIMITS)
    assert isinstance(result, Rejection), result
    return result.reason


def test_real_photo_is_resized_rgb() -> None:
    data = real_photos("Test", "Banana", 1)[0].read_bytes()
    result = decode_image(data, size=150, limits=LIMITS)
    assert isinstance(result, Decoded)
    assert result.pixels.shape == (150, 150, 3)
    assert result.pixels.dtype == np.float32
    assert (result.width, result.height) == (100, 100)
    # Fruits-360 photos sit on a white background: the corner is near white.
    assert result.pixels[0, 0].min() > 200


def test_preprocess_maps_to_minus_one_one() -> None:
    out = preprocess_input(np.array([0.0, 127.5, 255.0], dtype=np.float32))
    assert out.tolist() == [-1.0, 0.0, 1.0]


def test_transparent_png_is_composited_on_white() -> None:
    image = Image.new("RGBA", (20, 20), (255, 0, 0, 0))  # fully transparent red
    result = decode_image(_png(image), size=20, limits=LIMITS)
    assert isinstance(result, Decoded)
    assert result.pixels.min() == 255.0


def test_grayscale_becomes_three_equal_channels() -> None:
    result = decode_image(_png(Image.new("L", (10, 10), 80)), size=10, limits=LIMITS)
    assert isinstance(result, Decoded)
    assert np.all(result.pixels == 80.0)


def test_bad_bytes_get_reasons() -> None:
    jpeg = real_photos("Test", "Kiwi", 1)[0].read_bytes()
    assert _reason(b"") == "empty"
    assert _reason(b"hello, I am not a photo\n") == "not_an_image"
    assert _reason(b"%PDF-1.4 fake") == "not_an_image"
    assert _reason(jpeg[: len(jpeg) // 2]) == "truncated"
    assert _reason(b"x" * (LIMITS.max_bytes + 1)) == "too_large_bytes"


def test_decompression_bomb_is_rejected_from_its_header() -> None:
    # A valid PNG header declaring 100000 x 100000 pixels, in a few dozen bytes.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
    result = decode_image(data, size=99, limits=LIMITS)
    assert isinstance(result, Rejection)
    assert result.reason == "too_many_pixels"
    assert "100000x100000" in result.detail


@pytest.mark.parametrize("mode", ["CMYK", "P", "I;16"])
def test_other_pixel_modes_convert(mode: str) -> None:
    image = Image.new("RGB", (12, 8), (200, 100, 50)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF")
    result = decode_image(buffer.getvalue(), size=16, limits=LIMITS)
    assert isinstance(result, Decoded)
    assert result.pixels.shape == (16, 16, 3)
