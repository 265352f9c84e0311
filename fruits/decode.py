"""Decoding and validation of photo bytes: pure functions, shared by the batch and streaming jobs.

A photo either becomes a ``(size, size, 3)`` float32 array ready for InceptionV3, or a
:class:`Rejection` with a short reason code. Nothing here raises on bad bytes, and the pixel
limit is checked from the header, before the full decode, so a decompression bomb costs nothing.

Photos as phones send them: JPEG (and MPO, the multi-picture JPEG: its first picture), PNG, GIF,
WebP, HEIC/HEIF (pillow-heif, registered when this module is imported, so in every process that
decodes, Spark's Python workers included) and AVIF (Pillow's own plugin). The format comes from
the bytes, never the name, and only these formats are opened: PostScript, PDF, TIFF, BMP, ICO,
PSD and every other format Pillow knows are refused as ``not_an_image`` before any of their
plugins reads them (EPS is rendered by Ghostscript, a subprocess: never for an upload). Pillow's
own decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``) stays as it is for the process;
``images.max_pixels`` is applied per call, from the header.

EXIF orientation is applied, an embedded ICC profile is converted to sRGB, and the photo is
fitted into the model's square input keeping its aspect ratio, centred on the Fruits-360 white
background. A square photo is only resized (a 100x100 Fruits-360 photo at a 100x100 input is
untouched), so the training photos' pixels, and every model trained on them, do not depend on
the fit.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

__all__ = [
    "PHOTO_FORMATS",
    "REASONS",
    "Decoded",
    "ImageLimits",
    "Rejection",
    "decode_batch",
    "decode_image",
    "fit_square",
    "preprocess_input",
]

# Reason codes written to the quarantine table and to reports; the detail column says more.
REASONS = {
    "missing": "the file was deleted or replaced between its discovery and its reading",
    "empty": "the file has no bytes",
    "too_large_bytes": "the file is larger than images.max_bytes",
    "not_an_image": "the bytes are not one of the photo formats accepted (docs: photos accepted)",
    "too_many_pixels": "the declared width x height exceeds images.max_pixels",
    "zero_pixels": "the image declares a zero width or height",
    "truncated": "the image data ends early (an interrupted upload)",
    "corrupt": "the image header is readable but its data cannot be decoded",
    "unsupported_mode": "the pixel format cannot be converted to RGB",
}

# The formats "Photos accepted" lists (docs/concepts/data-path.md), by Pillow's names, tried
# in this order on the bytes (each plugin's own signature check first): MPO opens through
# JPEG's plugin, HEIF is pillow-heif's. Image.open is never given None (every format Pillow knows).
PHOTO_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "HEIF", "AVIF")
# HEIC/HEIF through Pillow's Image.open, once per process (importing this module is enough: the
# featurizer's UDF imports it in each Spark Python worker). Thumbnails are not needed. AVIF is
# Pillow's own plugin (Pillow >= 11.2).
pillow_heif.register_heif_opener(thumbnails=False)

# The dataset's background: padding around a photo that is not square, and under transparency.
WHITE = (255, 255, 255)
# Pillow's resize first shrinks by an integer factor (fast box filter) when the photo is at
# least this many times the target; below it, a plain bilinear resize.
_REDUCING_GAP = 3.0
_ORIENTATION = 0x0112
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# ISO-BMFF brands of still images (HEIF family and AVIF): "ftyp" box at offset 4.
_BMFF_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_BMFF_IMAGE_BRANDS |= {b"avif", b"avis", b"avio"}


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
    """An RGB photo fitted into the model's square input, values still in 0..255."""

    pixels: np.ndarray  # (size, size, 3) float32
    width: int  # original size, after EXIF rotation
    height: int
    # The central ``centre_share`` of the fitted square, enlarged to size x size (a test-time
    # crop: a fruit in the middle of a busy frame seen closer); None when not asked for.
    centre: np.ndarray | None = None


def decode_image(
    data: bytes | None, *, size: int, limits: ImageLimits, centre_share: float = 1.0
) -> Decoded | Rejection:
    """Decode ``data`` into a ``size`` x ``size`` RGB array, or say why it cannot be used;
    with ``centre_share`` below 1, also the central ``centre_share`` of that square (of its
    width and of its height) at ``size`` x ``size``."""
    if data is None:
        return Rejection("missing", REASONS["missing"])
    if not data:
        return Rejection("empty", "0 bytes")
    if len(data) > limits.max_bytes:
        return Rejection("too_large_bytes", f"{len(data)} bytes > {limits.max_bytes}")
    # Pillow warns (DecompressionBombWarning) past its own limit, and may warn on odd chunks:
    # here the project's limit decides, and a warning turned into an error elsewhere (pytest's
    # -W error, a job's filters) must not turn a photo into a rejection.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _decode(data, size=size, limits=limits, centre_share=centre_share)


def _decode(
    data: bytes, *, size: int, limits: ImageLimits, centre_share: float
) -> Decoded | Rejection:
    try:
        image = _open(data)
    except Exception as exc:  # Pillow raises many types on hostile headers
        return _unopenable(data, exc)
    width, height = image.size
    if width <= 0 or height <= 0:
        return Rejection("zero_pixels", f"{width}x{height}")
    if width * height > limits.max_pixels:
        return Rejection("too_many_pixels", f"{width}x{height} > {limits.max_pixels} pixels")
    try:
        orientation = _orientation(image)
        # The centre crop is cut from the photo fitted into a larger square, so the centre is
        # resampled once, from the photo's own pixels, like the whole.
        enlarged = size if centre_share >= 1.0 else round(size / centre_share)
        _decode_reduced(image, enlarged)
        image.load()
        upright = ImageOps.exif_transpose(image) or image
        rgb = _to_rgb(_to_srgb(upright))
    except _UnsupportedMode as exc:
        return Rejection("unsupported_mode", str(exc))
    except Image.DecompressionBombError as exc:  # a GIF frame larger than the header's screen
        return Rejection("too_many_pixels", f"over Pillow's decompression-bomb limit: {exc}")
    except Exception as exc:  # truncated streams, bad Huffman tables, broken chunks...
        reason = "truncated" if _looks_truncated(data, exc) else "corrupt"
        return Rejection(reason, _short(exc))
    if orientation in (5, 6, 7, 8):  # a quarter turn: the photo is displayed on its side
        width, height = height, width
    centre = None
    if enlarged != size:
        start = (enlarged - size) // 2
        box = (start, start, start + size, start + size)
        centre = np.asarray(fit_square(rgb, enlarged).crop(box), dtype=np.float32)
    return Decoded(
        pixels=np.asarray(fit_square(rgb, size), dtype=np.float32),
        width=width,
        height=height,
        centre=centre,
    )


def _open(data: bytes) -> Image.Image:
    """``data`` opened (its header read, nothing decoded) by the plugin of a photo format."""
    try:
        return Image.open(io.BytesIO(data), formats=PHOTO_FORMATS)
    except Image.DecompressionBombError:
        # Past twice Image.MAX_IMAGE_PIXELS Pillow refuses on opening, without saying the size.
        # The project's limit decides, per call (it may be lower or, if configured so, higher):
        # the same photo plugin reads the header again, without Pillow's process-wide check.
        head = data[:16]
        for name in PHOTO_FORMATS:
            if name not in Image.OPEN:
                continue  # a plugin Image.open did not need to load: not this photo's
            factory, accept = Image.OPEN[name]
            accepted = accept(head) if accept else True
            if accepted and not isinstance(accepted, str):
                return factory(io.BytesIO(data), "")
        raise


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """``image`` fitted into ``size`` x ``size``: scaled so its longer side is ``size``, centred
    on white. A square image is only resized (the Fruits-360 photos' path)."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    if width == height:
        return image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=_REDUCING_GAP)
    scale = size / max(width, height)
    fitted = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = image.resize(fitted, Image.Resampling.BILINEAR, reducing_gap=_REDUCING_GAP)
    canvas = Image.new("RGB", (size, size), WHITE)
    canvas.paste(resized, ((size - fitted[0]) // 2, (size - fitted[1]) // 2))
    return canvas


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


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1: upright). pillow-heif applies HEIF's own rotation and
    reports 1 here."""
    try:
        return int(image.getexif().get(_ORIENTATION, 1))
    except Exception:  # a broken EXIF block: the photo is shown as stored
        return 1


def _decode_reduced(image: Image.Image, size: int) -> None:
    """For a JPEG at least twice the model's input, let libjpeg decode at 1/2, 1/4 or 1/8 scale
    (its DCT scaling), never below the size the fit needs: a 12 Mpx photo costs a fraction of its
    full decode. Smaller photos, and other formats, decode in full (same pixels as before)."""
    width, height = image.size
    if image.format not in ("JPEG", "MPO") or max(width, height) < 2 * size:
        return
    scale = size / max(width, height)
    image.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))


def _to_srgb(image: Image.Image) -> Image.Image:
    """Pixels described by an embedded ICC profile (Adobe RGB, Display P3 from iPhones, a CMYK
    press profile...) converted to sRGB, the colours the model was trained on. A profile that
    cannot be read, or does not fit the pixel mode, is ignored: the pixels are used as they are."""
    icc = image.info.get("icc_profile")
    if not icc:
        return image
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(profile).lower():
            return image  # already sRGB: skip a transform that would change nothing
        space = profile.profile.xcolor_space.strip()
        modes = {"RGB": ("RGB", "RGBA"), "CMYK": ("CMYK",), "GRAY": ("L",)}.get(space, ())
        if image.mode not in modes:
            return image
        out_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(image, profile, _SRGB, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image
    return converted if converted is not None else image


def _unopenable(data: bytes, exc: BaseException) -> Rejection:
    """Pillow found no format that opens these bytes. A HEIF/AVIF container cut short fails here
    already (its boxes are parsed on opening): ``truncated``; a damaged one ``corrupt``."""
    brand = _bmff_image_brand(data)
    if brand is None:
        detail = _describe_magic(data) if isinstance(exc, UnidentifiedImageError) else _short(exc)
        return Rejection("not_an_image", detail)
    if _bmff_runs_past_end(data):
        return Rejection("truncated", f"{brand} file whose boxes run past its {len(data)} bytes")
    return Rejection("corrupt", f"{brand} file whose container cannot be read")


def _bmff_image_brand(data: bytes) -> str | None:
    """The major brand of a HEIF/AVIF file (``heic``, ``avif``...), None for other bytes."""
    if data[4:8] != b"ftyp" or data[8:12] not in _BMFF_IMAGE_BRANDS:
        return None
    return data[8:12].decode("ascii")


def _bmff_runs_past_end(data: bytes) -> bool:
    """Whether the top-level boxes of an ISO-BMFF file declare more bytes than there are."""
    offset = 0
    while offset + 8 <= len(data):
        size = struct.unpack_from(">I", data, offset)[0]
        header = 8
        if size == 1:  # a 64-bit size follows the type
            if offset + 16 > len(data):
                return True
            size = struct.unpack_from(">Q", data, offset + 8)[0]
            header = 16
        elif size == 0:  # the last box, up to the end of the file
            return False
        if size < header:
            return False  # not a box: damaged, not cut
        offset += size
    return offset > len(data)


def _looks_truncated(data: bytes, exc: BaseException) -> bool:
    text = str(exc).lower()
    if "truncated" in text or "end of file" in text:
        return True
    return _bmff_image_brand(data) is not None and _bmff_runs_past_end(data)


def _describe_magic(data: bytes) -> str:
    """What bytes no photo format opened are, where their first bytes say it: a document, an
    image format that is not accepted (by its Pillow plugin's signature check alone, which
    reads 16 bytes and runs nothing), text, or unknown."""
    head = data[:16]
    if head.startswith(b"%PDF"):
        return "PDF document"
    if head.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):  # PostScript; EPS with a DOS header
        return "PostScript (EPS) document, not a photo format accepted"
    named = _refused_format(head)
    if named:
        return f"{named} image (by its first bytes), not a photo format accepted"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head[:8]):
        return "text, not an image"
    return f"unknown format (first bytes {head[:8].hex()})"


def _refused_format(head: bytes) -> str | None:
    """The name of the format Pillow would have opened ``head`` as, among those refused."""
    Image.init()
    for name in Image.ID:
        _, accept = Image.OPEN[name]
        if name in PHOTO_FORMATS or accept is None:
            continue
        try:
            accepted = accept(head)
        except Exception:  # a plugin's check on too few bytes
            continue
        if accepted and not isinstance(accepted, str):  # a string is Pillow's "almost" message
            return str(name)
    return None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
