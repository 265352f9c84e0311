"""The validation split on file names: whole runs of consecutive frames, per class and video."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fruits.model.splits import VideoFrame, left_out_classes, validation_mask, video_frame

from .conftest import FRUITS360


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("r_123_100.jpg", VideoFrame("r", 123)),
        ("r2_7_100.jpg", VideoFrame("r2", 7)),
        ("123_100.jpg", VideoFrame("", 123)),
        ("0_100.jpg", VideoFrame("", 0)),
        ("/data/Training/Apple Red 1/r_45_100.jpg", VideoFrame("r", 45)),
        ("az://photos/Training/Kiwi/r2_310_100.JPG", VideoFrame("r2", 310)),
        ("IMG_0042.jpg", VideoFrame("IMG_", 42)),
        ("banana.png", VideoFrame("banana", 0)),
    ],
)
def test_video_and_frame_come_from_the_file_name(name: str, expected: VideoFrame) -> None:
    assert video_frame(name) == expected


def _video(prefix: str, frames: range) -> list[str]:
    return [f"{prefix}{f}_100.jpg" for f in frames]


def test_each_video_gives_one_contiguous_run_of_its_frames() -> None:
    # Two classes, three videos each, frames numbered like Fruits-360 (gaps included).
    paths, labels = [], []
    for label in ("Kiwi", "Lemon"):
        for prefix in ("", "r_", "r2_"):
            names = _video(prefix, range(0, 300, 3))  # 100 frames
            paths += names
            labels += [label] * len(names)
    mask = validation_mask(paths, labels, 0.2, seed=42)

    assert sum(mask) == 6 * 20
    for label in ("Kiwi", "Lemon"):
        for prefix in ("", "r_", "r2_"):
            held = sorted(
                video_frame(p).frame
                for p, lab, m in zip(paths, labels, mask, strict=True)
                if m and lab == label and video_frame(p).video == prefix.rstrip("_")
            )
            assert len(held) == 20
            # Consecutive frames of that video: no training frame between two held-out ones.
            assert held == list(range(held[0], held[0] + 3 * 20, 3))


def test_the_split_does_not_depend_on_the_order_of_the_photos() -> None:
    paths = _video("r_", range(50)) + _video("", range(50))
    labels = ["Kiwi"] * 100
    mask = dict(zip(paths, validation_mask(paths, labels, 0.2, seed=7), strict=True))
    shuffled = paths[:]
    random.Random(1).shuffle(shuffled)
    again = dict(zip(shuffled, validation_mask(shuffled, labels, 0.2, seed=7), strict=True))
    assert mask == again


def test_the_seed_and_the_video_move_the_run() -> None:
    paths = _video("r_", range(100))
    labels = ["Kiwi"] * 100
    starts = {
        min(i for i, m in enumerate(validation_mask(paths, labels, 0.1, seed=s)) if m)
        for s in range(20)
    }
    assert len(starts) > 5  # not always the first frames


def test_tiny_videos_keep_training_photos() -> None:
    paths = ["r_1_100.jpg", "r_2_100.jpg", "5_100.jpg"]
    labels = ["Kiwi"] * 3
    mask = validation_mask(paths, labels, 0.9, seed=0)
    # A 2-frame video gives one photo to each side; a single frame stays in training.
    assert mask[0] != mask[1]
    assert mask[2] is False


def test_on_the_real_training_names_validation_is_a_fifth_and_never_random_frames() -> None:
    training = FRUITS360 / "Training"
    paths = [str(p) for p in sorted(training.glob("*/*.jpg"))]
    labels = [Path(p).parent.name for p in paths]
    mask = validation_mask(paths, labels, 0.2, seed=42)
    assert 0.18 <= sum(mask) / len(mask) <= 0.22
    # Every class keeps photos on both sides, and per video the held-out frames form one run.
    for label in set(labels):
        sides = {m for lab, m in zip(labels, mask, strict=True) if lab == label}
        assert sides == {True, False}
    by_video: dict[tuple[str, str], list[tuple[int, bool]]] = {}
    for path, label, held in zip(paths, labels, mask, strict=True):
        key = video_frame(path)
        by_video.setdefault((label, key.video), []).append((key.frame, held))
    for frames in by_video.values():
        flags = [held for _, held in sorted(frames)]
        runs = sum(1 for a, b in zip([False, *flags], flags, strict=False) if b and not a)
        assert runs == 1


def test_left_out_classes_are_a_seeded_share_whatever_the_order() -> None:
    classes = [f"Class {i}" for i in range(114)]
    chosen = left_out_classes(classes, 0.1, seed=42)
    assert len(chosen) == 11 and set(chosen) <= set(classes)
    assert left_out_classes(list(reversed(classes)), 0.1, seed=42) == chosen
    assert left_out_classes(classes, 0.1, seed=43) != chosen
    assert left_out_classes(classes, 0.0, seed=42) == []
    # Training keeps at least two classes.
    assert len(left_out_classes(classes[:3], 0.9, seed=1)) == 1
