"""The validation split: held-out blocks of consecutive video frames, never random frames.

Fruits-360 photos are frames of one rotating-fruit video per class and axis: ``r_123_100.jpg``
is frame 123 of video ``r``, ``r2_…`` of video ``r2``, ``123_100.jpg`` of the unnamed video
(the trailing ``_100`` is the photo's size). Two neighbouring frames are nearly the same photo,
so a validation of random frames is answered nearly as well as the training photos
themselves, far better than Test (BENCHMARKS.md, section 3b, Honest validation), and anything
calibrated on it (the "unknown" threshold) is far too confident. Here each video gives
validation one contiguous run of its frames (a stretch of the rotation the training photos do
not show), at a seeded position that differs per video.

Pure functions over file names: no Spark, unit-tested on names (tests/test_splits.py).
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["VideoFrame", "left_out_classes", "validation_mask", "video_frame"]

# <video>_<frame>_<size>.<ext> with an optional video prefix ("r", "r2"), or any name whose last
# number is a frame counter (a phone's IMG_0042.jpg: consecutive shots of one scene).
_FRUITS360 = re.compile(r"^(?:(?P<video>[A-Za-z]\w*?)_)?(?P<frame>\d+)_\d+$")
_LAST_NUMBER = re.compile(r"^(?P<video>.*?)(?P<frame>\d+)\D*$")


@dataclass(frozen=True, order=True)
class VideoFrame:
    video: str
    frame: int


def video_frame(path: str) -> VideoFrame:
    """The video and frame number a photo's file name carries.

    ``r_123_100.jpg`` -> (r, 123); ``r2_7_100.jpg`` -> (r2, 7); ``123_100.jpg`` -> ("", 123);
    another name ending in a number (``IMG_0042.jpg``) -> (IMG_, 42); a name without digits is
    a video of its own (frame 0).
    """
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    match = _FRUITS360.match(stem) or _LAST_NUMBER.match(stem)
    if match is None:
        return VideoFrame(stem, 0)
    return VideoFrame(match.group("video") or "", int(match.group("frame")))


def validation_mask(
    paths: Sequence[str], labels: Sequence[str], fraction: float, seed: int
) -> list[bool]:
    """True for the photos held out for validation.

    Per class and video, the frames in order, one contiguous run of ``round(fraction * n)`` of
    them (at least one when the video has 2 or more frames; none from a single-frame video), at
    a position drawn from a hash of (seed, class, video): the same for any order of the input.
    """
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    videos: dict[tuple[str, str], list[tuple[VideoFrame, str, int]]] = defaultdict(list)
    for index, (path, label) in enumerate(zip(paths, labels, strict=True)):
        key = video_frame(path)
        videos[(label, key.video)].append((key, path, index))
    held_out = [False] * len(paths)
    for (label, video), members in videos.items():
        members.sort()
        n = len(members)
        if n < 2:
            continue
        size = min(max(1, round(fraction * n)), n - 1)
        start = _draw(seed, label, video) % (n - size + 1)
        for _, _, index in members[start : start + size]:
            held_out[index] = True
    return held_out


def _draw(seed: int, label: str, video: str) -> int:
    """A stable pseudo-random integer (Python's hash() changes between processes)."""
    digest = hashlib.sha256(f"{seed}\0{label}\0{video}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def left_out_classes(classes: Sequence[str], share: float, seed: int) -> list[str]:
    """A seeded random ``share`` of ``classes`` (rounded, at least one when ``share`` > 0),
    sorted: the classes a leave-classes-out training never sees, to measure how many of their
    photos "unknown" catches. Drawn by hash, so the same for any order of ``classes``."""
    if share <= 0:
        return []
    count = min(max(1, round(share * len(classes))), len(classes) - 2)
    ranked = sorted(set(classes), key=lambda label: _draw(seed, label, "leave-out"))
    return sorted(ranked[:count])
