"""Photos as phones send them, through the stream: HEIC, HEIF, AVIF and 12-megapixel JPEGs made
from real held-out photos get the class of the photo they show (issue 17's "Done when")."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from PIL import Image

from fruits.config import Config
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE

from .bad_inputs import avif, heif, twelve_megapixels
from .conftest import KNOWN_CLASSES, real_photos

PHONE_NAMES = ("IMG.HEIC", "sideways.heif", "android.avif", "camera-12mp.jpg")


@pytest.fixture
def delta_writer() -> str:
    """One writer: the formats are the decoder's concern; both writers are tested elsewhere."""
    return "deltars"


def _phone_versions(photo: Image.Image) -> dict[str, bytes]:
    """The photo as an iPhone (HEIC; HEIF held sideways, with its rotation in the file), an
    Android phone (AVIF) and a 12 Mpx camera (a 4000x3000 JPEG framed 4:3 on the upscaled
    scene) would upload it."""
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned left: displayed after a quarter turn clockwise
    sideways = photo.transpose(Image.Transpose.ROTATE_90)
    versions = (heif(photo), heif(sideways, exif=exif.tobytes()), avif(photo))
    return dict(zip(PHONE_NAMES, (*versions, twelve_megapixels(photo)), strict=True))


@pytest.mark.spark
def test_phone_formats_get_the_class_of_the_photo_they_show(
    memory_query: Any, stream_config: Config
) -> None:
    feed, query, _ = memory_query
    now = dt.datetime.now(dt.UTC)
    rows = []
    for label in KNOWN_CLASSES:
        for path in real_photos("Test", label, 2, skip=1):
            folder = f"mem://{label}/{path.stem}"
            rows.append((f"{folder}/original.jpg", path.read_bytes(), now))
            versions = _phone_versions(Image.open(path).convert("RGB"))
            rows += [(f"{folder}/{name}", data, now) for name, data in versions.items()]
    feed.add(rows)
    query.processAllAvailable()

    lake = DeltaRsLake(stream_config.path("lake"))
    assert lake.read_arrow(QUARANTINE).num_rows == 0
    label_of = {r["path"]: r["label"] for r in lake.read_arrow(PREDICTIONS).to_pylist()}
    assert len(label_of) == len(rows)
    # The photos the small test model gets right as the dataset's own JPEGs: most of them, and
    # at least one of every class.
    right = {
        path.rsplit("/", 1)[0]
        for path, label in label_of.items()
        if path.endswith("/original.jpg") and label == path.split("/")[2]
    }
    assert len(right) >= 6 and {folder.split("/")[2] for folder in right} == set(KNOWN_CLASSES)
    for folder in sorted(right):
        shown = folder.split("/")[2]
        for name in PHONE_NAMES:
            assert label_of[f"{folder}/{name}"] == shown, (folder, name)
