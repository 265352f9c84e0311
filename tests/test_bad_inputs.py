"""Every case of the bad-input corpus ends where RELIABILITY.md says, and nothing raises."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fruits.decode import Decoded, ImageLimits, Rejection, decode_image

from .bad_inputs import PREDICTED, Case, corpus
from .conftest import real_photos

LIMITS = ImageLimits()
CASES = corpus()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decoder_decision(case: Case) -> None:
    result = decode_image(case.data, size=99, limits=LIMITS)
    if case.expected == PREDICTED:
        assert isinstance(result, Decoded), result
        assert result.pixels.shape == (99, 99, 3)
    else:
        assert isinstance(result, Rejection)
        assert result.reason == case.expected, result.detail


def test_alpha_is_composited_on_white_and_exif_rotation_applied() -> None:
    by_name = {c.name: c for c in CASES}
    alpha = decode_image(by_name["alpha.png"].data, size=100, limits=LIMITS)
    assert isinstance(alpha, Decoded)
    assert alpha.pixels[0, 0].min() > 240  # half-transparent white stays white
    import io

    from PIL import Image

    base = Image.open(io.BytesIO(real_photos("Test", "Kiwi", 1)[0].read_bytes())).convert("RGB")
    wide = base.resize((120, 60))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    wide.save(buffer, format="JPEG", exif=exif.tobytes())
    rotated = decode_image(buffer.getvalue(), size=99, limits=LIMITS)
    assert isinstance(rotated, Decoded)
    assert (rotated.width, rotated.height) == (60, 120)  # displayed upright


_JPEG = real_photos("Test", "Banana", 1)[0].read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert isinstance(decode_image(data, size=75, limits=LIMITS), Decoded | Rejection)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, len(_JPEG) - 1), st.integers(0, 255)), max_size=20),
    st.integers(1, len(_JPEG)),
)
def test_mutated_jpegs_never_raise(flips: list[tuple[int, int]], keep: int) -> None:
    data = bytearray(_JPEG)
    for position, value in flips:
        data[position] = value
    result = decode_image(bytes(data[:keep]), size=75, limits=LIMITS)
    assert isinstance(result, Decoded | Rejection)


# Through the stream, by every landing source: tests/test_corpus_sources.py.
