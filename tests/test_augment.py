"""Synthetic phone photos of studio photos (fruits/augment.py), on a real Fruits-360 photo."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from fruits.augment import phone_photo
from fruits.features.featurizer import _phone_photo

from .conftest import real_photos


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def _fruit_share(pixels: np.ndarray) -> tuple[float, np.ndarray]:
    """The share of the frame that is the blue fruit (no surface is blue), and its centre."""
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    close = (blue > red + 70) & (blue > green + 50)
    ys, xs = np.nonzero(close)
    return float(close.mean()), np.array([ys.mean() / len(pixels), xs.mean() / len(pixels[0])])


def test_a_phone_photo_puts_the_fruit_at_any_size_and_place_on_a_surface() -> None:
    # A studio photo stands in with a flat blue disc on white, so the fruit is easy to find.
    studio = Image.new("RGB", (100, 100), (255, 255, 255))
    disc = Image.new("L", (100, 100), 0)
    ImageDraw.Draw(disc).ellipse((10, 10, 90, 90), fill=255)
    studio.paste((30, 60, 230), (0, 0), disc)
    buffer = io.BytesIO()
    studio.save(buffer, format="PNG")
    shares, centres, whites, shapes = [], [], [], set()
    for seed in range(24):
        pixels = _pixels(phone_photo(buffer.getvalue(), seed))
        shapes.add(pixels.shape)
        share, centre = _fruit_share(pixels)
        shares.append(share)
        centres.append(centre)
        whites.append((pixels.mean(axis=2) > 160).mean())
    assert shapes == {(300, 400, 3), (400, 300, 3)}  # landscape and portrait phones
    # The studio's white is replaced by a surface (now and then a plain light one).
    assert np.median(whites) < 0.05 and max(whites) > 0.5
    assert min(shares) < 0.05 and max(shares) > 0.3  # small and large in the frame
    spread = np.ptp(np.array(centres), axis=0)
    assert spread.min() > 0.2  # not always in the middle


def test_the_same_photo_and_seed_give_the_same_bytes_and_bad_bytes_are_left_alone() -> None:
    data = real_photos("Training", "Banana", 1)[0].read_bytes()
    assert phone_photo(data, 7) == phone_photo(data, 7)
    assert phone_photo(data, 7) != phone_photo(data, 8)
    # In the featurizer: seeded by the photo's hash and the copy's number.
    assert _phone_photo(data, 1) == _phone_photo(data, 1) != _phone_photo(data, 2)
    for bad in (b"not a photo", b"", None):
        assert _phone_photo(bad, 1) == bad  # the decoder gives the quarantine reason
    assert pd.Series([_phone_photo(data, 1)]).iloc[0][:3] == b"\xff\xd8\xff"  # a JPEG
