"""Studio photos re-framed as phones take them: training data for real photos.

A Fruits-360 photo is one fruit filling a white square. App users send a fruit small or large
in a busy frame. :func:`phone_photo` makes, from one studio photo and a seed, a synthetic phone
photo: the fruit (its mask is where the photo is not white) scaled to 20-100% of the frame's
shorter side, at a random place on a textured background (wood, shelf, cloth, bin colours with
grain and shading) or a plain light one (a plate, a counter), sometimes a second copy of it
beside it (several fruits in one photo), then colour and brightness jitter, sometimes blur,
and JPEG compression at a random quality. The result is photo bytes, decoded and featurized
by the same code as every upload (fruits/decode.py, fruits/features/featurizer.py), so an
augmented copy differs from a real photo only in its pixels.

Deterministic: the same photo and seed give the same bytes (the features cache relies on it).
Pure Pillow and numpy; no Spark.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["BACKGROUNDS", "VERSION", "phone_photo"]

# Base colours of the places fruit is photographed: wood (light, dark), a grey shelf, a
# black crate, a green bin, a cloth, a kitchen counter, cardboard.
BACKGROUNDS = (
    (186, 140, 94),
    (110, 72, 45),
    (150, 150, 150),
    (40, 40, 44),
    (40, 110, 60),
    (170, 60, 55),
    (225, 220, 205),
    (176, 138, 96),
)
# Part of the features' extractor id (fruits/features/featurizer.py): a change to what this
# module draws must change it, so features cached from older copies are never reused.
VERSION = 2
_PLAIN_SHARE = 0.2  # of the surfaces: a plain light one (a plate, a counter, paper)
_FRAME = (400, 300)  # a phone's 4:3, small enough to be cheap (the model sees 100-320 px)
_WHITE_TOLERANCE = 40  # a studio pixel this close to white (per channel) is background


def phone_photo(data: bytes, seed: int) -> bytes:
    """A synthetic phone photo (JPEG bytes) of the studio photo ``data``, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    with Image.open(io.BytesIO(data)) as opened:
        fruit = opened.convert("RGB")
    mask = _mask(fruit)
    box = mask.getbbox()
    if box is not None:  # the fruit itself, without its white margin
        fruit, mask = fruit.crop(box), mask.crop(box)
    width, height = _FRAME if rng.random() < 0.5 else _FRAME[::-1]  # landscape or portrait
    canvas = _background(rng, width, height)
    copies = 2 if rng.random() < 0.25 else 1
    for _ in range(copies):
        side = rng.uniform(0.2, 1.0) * min(width, height) / (1.2 if copies > 1 else 1.0)
        scale = side / max(fruit.size)
        size = (max(1, round(fruit.size[0] * scale)), max(1, round(fruit.size[1] * scale)))
        angle = float(rng.uniform(-30, 30))
        placed = fruit.resize(size, Image.Resampling.BILINEAR).rotate(angle, expand=True)
        alpha = mask.resize(size, Image.Resampling.BILINEAR).rotate(angle, expand=True)
        alpha = alpha.filter(ImageFilter.GaussianBlur(1.0))  # a soft edge, as a lens gives
        x = int(rng.integers(0, max(1, width - placed.size[0] + 1)))
        y = int(rng.integers(0, max(1, height - placed.size[1] + 1)))
        canvas.paste(placed, (x, y), alpha)
    canvas = _jitter(canvas, rng)
    if rng.random() < 0.3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    out = io.BytesIO()
    canvas.save(out, format="JPEG", quality=int(rng.integers(45, 92)))
    return out.getvalue()


def _mask(photo: Image.Image) -> Image.Image:
    """Where the studio photo is not its white background (L, 0 or 255)."""
    pixels = np.asarray(photo, dtype=np.int16)
    fruit = (255 - pixels).max(axis=2) > _WHITE_TOLERANCE
    mask = Image.fromarray((fruit * 255).astype(np.uint8), mode="L")
    return mask.filter(ImageFilter.MinFilter(5))  # 2 px in: no white halo around the fruit


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A textured surface: a base colour, a shading gradient and grain stretched along one axis
    (wood, cloth), drawn at a quarter of the size and enlarged (which smooths it), then fine
    noise."""
    w, h = max(2, width // 4), max(2, height // 4)
    if rng.random() < _PLAIN_SHARE:
        base = rng.uniform(225, 255) + rng.normal(0, 4, 3)
    else:
        colour = np.asarray(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], dtype=np.float64)
        base = colour * rng.uniform(0.75, 1.25) + rng.normal(0, 12, 3)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(direction) * xs / w + np.sin(direction) * ys / h) * rng.uniform(0, 60)
    ramp -= ramp.mean()  # shading, lighter on one side: the colour stays the surface's
    stretch = (4, 1) if rng.random() < 0.5 else (1, 4)  # grain along rows or columns
    grain = rng.normal(0, rng.uniform(4, 22), (h // stretch[1] + 1, w // stretch[0] + 1))
    grain = np.repeat(np.repeat(grain, stretch[1], axis=0), stretch[0], axis=1)[:h, :w]
    small = np.clip(base + (ramp + grain)[..., None], 0, 255).astype(np.uint8)
    surface = (
        Image.fromarray(small, mode="RGB")
        .filter(ImageFilter.GaussianBlur(1.0))
        .resize((width, height), Image.Resampling.BICUBIC)
    )
    noisy = np.asarray(surface, dtype=np.float64) + rng.normal(0, 3, (height, width, 1))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), mode="RGB")


def _jitter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast, saturation and white balance, as phones and lighting vary."""
    pixels = np.asarray(image, dtype=np.float32)
    grey = pixels.mean(axis=2, keepdims=True)
    pixels = grey + (pixels - grey) * rng.uniform(0.7, 1.3)  # saturation
    pixels = (pixels - pixels.mean()) * rng.uniform(0.8, 1.2) + pixels.mean()  # contrast
    pixels = pixels * rng.uniform(0.7, 1.25) * rng.uniform(0.92, 1.08, 3)  # light, its colour
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
