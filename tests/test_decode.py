"""Decoding and validation are pure: no Spark, real photos and generated bad bytes."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from fruits.decode import (
    Decoded,
    ImageLimits,
    Rejection,
    _decode_reduced,
    decode_image,
    fit_square,
    preprocess_input,
)

from .bad_inputs import EPS, adobe_rgb_icc, avif, heif, heif_declaring, twelve_megapixels
from .conftest import KNOWN_CLASSES, real_photos

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


@pytest.mark.parametrize(("mode", "fmt"), [("CMYK", "JPEG"), ("P", "GIF"), ("I;16", "PNG")])
def test_other_pixel_modes_convert(mode: str, fmt: str) -> None:
    image = Image.new("RGB", (12, 8), (200, 100, 50)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    result = decode_image(buffer.getvalue(), size=16, limits=LIMITS)
    assert isinstance(result, Decoded)
    assert result.pixels.shape == (16, 16, 3)


def _saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _decoded(data: bytes, size: int, limits: ImageLimits = LIMITS) -> Decoded:
    result = decode_image(data, size=size, limits=limits)
    assert isinstance(result, Decoded), result
    return result


def _photo(label: str = "Kiwi") -> Image.Image:
    return Image.open(real_photos("Test", label, 1)[0]).convert("RGB")


@pytest.mark.parametrize("size", [100, 128])
def test_fruits360_photos_decode_to_the_same_pixels_as_before(size: int) -> None:
    # Before aspect fitting, a photo was converted to RGB and resized (bilinear) to the square
    # input; a square photo must still give exactly those pixels, or trained models would drift.
    for label in KNOWN_CLASSES:
        for path in real_photos("Test", label, 3):
            rgb = Image.open(path).convert("RGB")
            before = rgb if rgb.size == (size, size) else rgb.resize((size, size), Image.BILINEAR)
            decoded = _decoded(path.read_bytes(), size)
            assert np.array_equal(decoded.pixels, np.asarray(before, dtype=np.float32)), path


def test_a_wide_photo_is_fitted_on_white_bands_not_stretched() -> None:
    red = Image.new("RGB", (200, 100), (220, 30, 30))
    decoded = _decoded(_png(red), 100)
    assert (decoded.width, decoded.height) == (200, 100)
    assert np.all(decoded.pixels[:25] == 255.0) and np.all(decoded.pixels[75:] == 255.0)
    assert np.all(decoded.pixels[25:75] == np.array([220, 30, 30], dtype=np.float32))
    tall = fit_square(Image.new("RGB", (30, 90), (0, 0, 0)), 60)  # 20x60, centred
    columns = np.asarray(tall)[:, :, 0].min(axis=0)
    assert columns[:20].min() == 255 and columns[20:40].max() == 0 and columns[40:].min() == 255


def test_the_centre_crop_is_the_middle_of_the_fitted_square_enlarged() -> None:
    # A red square filling the middle half of a blue photo: the whole photo shows both, its
    # central half (of each side) is all red, at the same input size.
    photo = Image.new("RGB", (200, 200), (20, 40, 200))
    photo.paste((220, 30, 30), (50, 50, 150, 150))
    data = _png(photo)
    whole = _decoded(data, 100)
    assert whole.centre is None  # only when asked for
    cropped = decode_image(data, size=100, limits=LIMITS, centre_share=0.5)
    assert isinstance(cropped, Decoded) and cropped.centre is not None
    assert cropped.centre.shape == (100, 100, 3) and cropped.centre.dtype == np.float32
    assert np.array_equal(cropped.pixels, whole.pixels)  # the whole photo as without the crop
    red = np.array([220, 30, 30], dtype=np.float32)
    assert np.abs(cropped.centre[2:-2, 2:-2] - red).max() < 1  # the edge: resampling's blend
    assert np.abs(whole.pixels[5:20, 5:20] - np.array([20, 40, 200])).max() < 1  # blue border
    # A wide photo: the crop is of the fitted square, white bands included.
    wide = decode_image(
        _png(Image.new("RGB", (400, 100), (0, 0, 0))), size=80, limits=LIMITS, centre_share=0.8
    )
    assert isinstance(wide, Decoded) and wide.centre is not None
    rows = wide.centre[:, :, 0].mean(axis=1)
    assert rows[0] == 255.0 and rows[40] == 0.0  # band above, the photo across the middle


@pytest.mark.parametrize("fmt", ["JPEG", "HEIF", "AVIF"])
def test_exif_orientation_gives_the_upright_pixels(fmt: str) -> None:
    # Upright: a real photo over a red top band; stored turned a quarter to the left with
    # orientation 6 ("turn 90 degrees clockwise to display"), as a phone held sideways saves it.
    upright = Image.new("RGB", (100, 150), (255, 255, 255))
    upright.paste(Image.new("RGB", (100, 50), (230, 20, 20)), (0, 0))
    upright.paste(_photo(), (0, 50))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 150x100
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _saved(stored, fmt, exif=exif.tobytes(), quality=95)
    decoded = _decoded(data, 150)
    assert (decoded.width, decoded.height) == (100, 150)
    expected = np.asarray(fit_square(upright, 150), dtype=np.float32)
    assert np.abs(decoded.pixels - expected).mean() < 4  # lossy codecs: a few levels
    top_band = decoded.pixels[5:40, 35:115]
    assert top_band[..., 0].mean() > 200 and top_band[..., 1].mean() < 60  # red is on top
    ignored = np.asarray(fit_square(stored, 150), dtype=np.float32)
    assert np.abs(decoded.pixels - ignored).mean() > 20  # the tag really changed the pixels


def test_an_icc_profile_is_converted_to_srgb() -> None:
    # (180, 100, 60) in Adobe RGB is (203, 100, 55) in sRGB, computed here with the standard
    # matrices (Adobe RGB -> XYZ -> sRGB, both D65) and transfer curves, not with Pillow.
    colour = np.array([180, 100, 60]) / 255.0
    adobe_to_xyz = np.array(
        [[0.5767309, 0.1855540, 0.1881852], [0.2973769, 0.6273491, 0.0752741],
         [0.0270343, 0.0706872, 0.9911085]]
    )  # fmt: skip
    xyz_to_srgb = np.array(
        [[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560],
         [0.0556434, -0.2040259, 1.0572252]]
    )  # fmt: skip
    linear = np.clip(xyz_to_srgb @ adobe_to_xyz @ colour ** (563 / 256), 0, 1)
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    image = Image.new("RGB", (16, 16), (180, 100, 60))
    for fmt in ("PNG", "WEBP"):
        decoded = _decoded(_saved(image, fmt, icc_profile=adobe_rgb_icc(), lossless=True), 16)
        assert np.abs(decoded.pixels[8, 8] - srgb * 255).max() < 1.5, fmt
    untagged = _decoded(_saved(image, "PNG"), 16)
    assert untagged.pixels[8, 8].tolist() == [180.0, 100.0, 60.0]


def test_an_mpo_gives_its_first_picture() -> None:
    photo = _photo()
    flipped = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    mpo = _saved(photo, "MPO", save_all=True, append_images=[flipped])
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    first = _decoded(_saved(photo, "JPEG"), 100).pixels
    assert np.array_equal(_decoded(mpo, 100).pixels, first)


@pytest.mark.parametrize("encode", [heif, avif], ids=["heic", "avif"])
def test_heic_and_avif_decode_to_the_photo(encode: object) -> None:
    photo = _photo("Banana")
    data = encode(photo)  # type: ignore[operator]
    decoded = _decoded(data, 100)
    assert (decoded.width, decoded.height) == (100, 100)
    assert np.abs(decoded.pixels - np.asarray(photo, dtype=np.float32)).mean() < 4
    truncated = decode_image(data[: len(data) // 2], size=100, limits=LIMITS)
    assert isinstance(truncated, Rejection) and truncated.reason == "truncated"


def test_a_heic_bomb_is_rejected_from_its_header() -> None:
    result = decode_image(heif_declaring(10_000, 10_000), size=99, limits=LIMITS)
    assert isinstance(result, Rejection) and result.reason == "too_many_pixels"
    assert "10000x10000" in result.detail


def test_a_12_megapixel_jpeg_is_decoded_reduced_and_matches_the_full_decode() -> None:
    data = twelve_megapixels(_photo())
    limits = ImageLimits(max_bytes=20_000_000, max_pixels=40_000_000)
    decoded = _decoded(data, 100, limits)
    assert (decoded.width, decoded.height) == (4000, 3000)
    full = fit_square(Image.open(io.BytesIO(data)).convert("RGB"), 100)  # no draft
    assert np.abs(decoded.pixels - np.asarray(full, dtype=np.float32)).mean() < 3
    # 4000x3000 fitted to 100x75: white bands above and below the photo.
    assert decoded.pixels[:12].min() == 255.0 and decoded.pixels[88:].min() == 255.0
    # libjpeg decoded it at 1/8 scale (500x375, still above the 100x75 the fit needs).
    image = Image.open(io.BytesIO(data))
    _decode_reduced(image, 100)
    image.load()
    assert image.size == (500, 375)


def test_postscript_named_jpg_is_refused_without_starting_a_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import subprocess

    from PIL import EpsImagePlugin

    assert Image.open(io.BytesIO(EPS)).format == "EPS"  # real PostScript, as Pillow sees it
    started: list[object] = []
    loaded: list[object] = []

    def no_process(*args: object, **kwargs: object) -> None:
        started.append(args)
        raise AssertionError("the decoder started a process")

    original_load = EpsImagePlugin.EpsImageFile.load

    def recorded_load(self: EpsImagePlugin.EpsImageFile, *args: object, **kwargs: object) -> object:
        loaded.append(self)
        return original_load(self, *args, **kwargs)

    # As on a server with Ghostscript installed (this machine has none): rendering the EPS
    # would run it, through subprocess.
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", "gs")
    monkeypatch.setattr(subprocess, "Popen", no_process)
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "load", recorded_load)
    result = decode_image(EPS, size=99, limits=LIMITS)
    assert isinstance(result, Rejection), result
    assert (result.reason, "PostScript" in result.detail) == ("not_an_image", True), result
    assert started == [] and loaded == []  # the EPS plugin never read it; no process started


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "ICO", "JPEG2000", "PPM"])
def test_image_formats_that_are_not_photo_formats_are_refused_by_name(fmt: str) -> None:
    data = _saved(Image.new("RGB", (32, 32), (200, 100, 50)), fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself would open it
    result = decode_image(data, size=32, limits=LIMITS)
    assert isinstance(result, Rejection), result
    assert result.reason == "not_an_image"
    assert result.detail.startswith(f"{fmt} image"), result.detail


def test_pillows_own_bomb_guard_stays_on_for_the_process() -> None:
    decode_image(_png(Image.new("RGB", (8, 8))), size=8, limits=LIMITS)
    # Pillow's default (about 89 Mpx: a warning past it, an error past twice it) is untouched
    # by importing and using the decoder: the rest of the process keeps its guard.
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS > 0


def test_a_header_between_pillows_limits_is_refused_by_the_projects_limit() -> None:
    # 10000 x 10000 (100 Mpx): past Pillow's warning threshold, under its error; over 40 Mpx.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping the decoder fails the test
        result = decode_image(_png_header(10_000, 10_000), size=99, limits=ImageLimits())
    assert isinstance(result, Rejection) and result.reason == "too_many_pixels", result
    assert "10000x10000 > 40000000" in result.detail


def test_the_projects_pixel_limit_decides_per_call_on_either_side_of_pillows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pillow's limit lowered to 1 Mpx (warning past 1, error past 2) stands for a project limit
    # configured above Pillow's: the same code paths, with photos of a few Mpx.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    limits = ImageLimits(max_bytes=1_000_000, max_pixels=4_000_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        past_warning = decode_image(
            _png(Image.new("RGB", (1200, 1000), "red")), size=50, limits=limits
        )
        past_error = decode_image(
            _png(Image.new("RGB", (1800, 1500), "red")), size=50, limits=limits
        )
        over_ours = decode_image(
            _png(Image.new("RGB", (2500, 2000), "red")), size=50, limits=limits
        )
    assert isinstance(past_warning, Decoded), past_warning
    assert (past_warning.width, past_warning.height) == (1200, 1000)
    assert isinstance(past_error, Decoded), past_error
    assert (past_error.width, past_error.height) == (1800, 1500)
    assert isinstance(over_ours, Rejection) and over_ours.reason == "too_many_pixels"
    assert "2500x2000 > 4000000" in over_ours.detail


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
