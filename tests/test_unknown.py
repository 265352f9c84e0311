"""The "unknown" detector and its calibration: pure numpy, no Spark."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from bench.unknown_selection import fit_pca_detector
from fruits.model.metrics import open_set_curve
from fruits.model.scoring import LinearScorer
from fruits.model.unknown import (
    UnknownDetector,
    calibrate_unknown,
    distance_threshold,
    fit_detector,
    fused_score,
)


def _clusters(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    """``n`` points around each centre: tight classes, like the frames of one video."""
    return np.concatenate([c + 0.05 * rng.standard_normal((n, centres.shape[1])) for c in centres])


def _pca(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardise + PCA as Spark does it (components of the standardised data, not centred
    again): mean, std, components (d x d, largest variance first), the training points."""
    mean, std = features.mean(axis=0), features.std(axis=0, ddof=1)
    scaled = (features - mean) / std
    _, _, vt = np.linalg.svd(scaled, full_matrices=False)
    components = vt.T
    return mean, std, components, scaled @ components


@pytest.fixture
def fitted() -> tuple[UnknownDetector, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 12)) * 3
    training = _clusters(rng, centres, 40)
    mean, std, components, points = _pca(training)
    detector = fit_pca_detector(
        mean=mean, std=std, components=components, train_points=points, k=1, dims=4
    )
    return detector, training, centres


def test_the_raw_detector_measures_cosine_distances_in_the_leading_directions() -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 12)) * 3
    training = _clusters(rng, centres, 40)
    detector = fit_detector(training, None, k=1, dims=12)
    # All 12 directions: the distance is the plain cosine distance in the feature space, and
    # it does not depend on a photo's scale.
    photo = training[:1] * 3.0 + 0.01
    unit = training / np.linalg.norm(training, axis=1, keepdims=True)
    expected = np.linalg.norm(unit - photo / np.linalg.norm(photo), axis=1).min()
    assert detector.distance(photo) == pytest.approx([expected], abs=1e-4)
    assert detector.references.shape == (120, 12) and detector.reference_classes is None
    # Fewer directions: the leading ones, and still unit-length references.
    small = fit_detector(training, None, k=1, dims=3)
    assert small.projection.shape == (12, 3)
    np.testing.assert_allclose(np.linalg.norm(small.references, axis=1), 1.0, rtol=1e-5)


def test_with_classes_the_distance_is_to_the_answered_classs_photos() -> None:
    # Two classes along two axes; a photo on the first axis is near class 0, far from class 1.
    training = np.array([[1.0, 0.0], [1.0, 0.05], [0.0, 1.0], [0.05, 1.0]])
    detector = fit_detector(training, np.array([0, 0, 1, 1]), k=1, dims=2)
    photo = np.array([[2.0, 0.0], [2.0, 0.0]])
    near, far = detector.distance(photo, np.array([0, 1]))
    assert near == pytest.approx(0.0, abs=1e-3)
    nearest_of_class_1 = np.array([0.05, 1.0]) / np.linalg.norm([0.05, 1.0])
    assert far == pytest.approx(np.linalg.norm(np.array([1.0, 0.0]) - nearest_of_class_1))
    with pytest.raises(ValueError, match="answered"):
        detector.distance(photo)


def test_the_folded_map_is_standardise_pca_leading_components_unit_length(
    fitted: tuple[UnknownDetector, np.ndarray, np.ndarray],
) -> None:
    detector, training, _ = fitted
    mean, std, components, _ = _pca(training)
    photo = training[:5] + 0.3
    expected = ((photo - mean) / std @ components)[:, :4]
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(detector.embed(photo), expected, rtol=1e-4, atol=1e-5)
    assert detector.references.shape == (120, 4)
    np.testing.assert_allclose(np.linalg.norm(detector.references, axis=1), 1.0, rtol=1e-5)


def test_a_training_photo_is_at_distance_zero_and_another_fruit_far(
    fitted: tuple[UnknownDetector, np.ndarray, np.ndarray],
) -> None:
    detector, training, centres = fitted
    assert detector.distance(training[:10]).max() < 1e-3
    rng = np.random.default_rng(1)
    # New photos of the known fruits, and of a fruit between none of them.
    known = _clusters(rng, centres, 10)
    stranger = _clusters(rng, -centres[:1] + 2, 10)
    near, far = detector.distance(known), detector.distance(stranger)
    assert far.min() > near.max()
    calibrated = detector.calibrated(distance_threshold(near, 0.0))
    confident = np.ones(len(known))
    assert not calibrated.is_unknown(known, confident, None).any()
    assert calibrated.is_unknown(stranger, confident, None).all()


def test_the_kth_neighbour_is_used() -> None:
    references = np.eye(3, dtype=np.float32)
    detector = UnknownDetector(
        projection=np.eye(3, dtype=np.float32),
        offset=np.zeros(3, dtype=np.float32),
        references=references,
        k=2,
    )
    # (1, 0, 0): distance 0 to the first reference, sqrt(2) to the others.
    assert detector.distance(np.array([[5.0, 0.0, 0.0]])) == pytest.approx([math.sqrt(2)])
    one = UnknownDetector(detector.projection, detector.offset, references, k=1)
    assert one.distance(np.array([[5.0, 0.0, 0.0]])) == pytest.approx([0.0], abs=1e-6)


def test_a_detector_is_saved_and_loaded_whole(
    fitted: tuple[UnknownDetector, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    detector = fitted[0].calibrated(0.25)
    detector.save(tmp_path / "detector.npz")
    loaded = UnknownDetector.load(tmp_path / "detector.npz")
    assert (loaded.k, loaded.threshold) == (1, 0.25)
    np.testing.assert_array_equal(loaded.references, detector.references)
    photos = fitted[1][:7] * 1.1
    np.testing.assert_array_equal(loaded.distance(photos), detector.distance(photos))


def test_the_distance_threshold_rejects_at_most_the_share() -> None:
    distances = np.arange(100, dtype=np.float64)  # 0..99
    threshold = distance_threshold(distances, 0.02)
    assert (distances > threshold).sum() == 2
    assert (distances > distance_threshold(distances, 0.0)).sum() == 0
    assert distance_threshold([], 0.02) == math.inf


def test_the_fused_score_multiplies_the_two_p_values() -> None:
    known_conf = np.sort(np.linspace(0.5, 1.0, 99))
    known_dist = np.sort(np.linspace(0.0, 0.5, 99))
    # As low a probability as the lowest known one and as far as the farthest: p = 2/100 each.
    score = fused_score(np.array([0.5]), np.array([0.5]), known_conf, known_dist)
    assert score == pytest.approx([-2 * math.log(2 / 100)])
    # Beyond every known photo on both: 1/100 each, the largest score there is.
    beyond = fused_score(np.array([0.1]), np.array([0.9]), known_conf, known_dist)
    assert beyond == pytest.approx([-2 * math.log(1 / 100)])
    # Typical on both: a small score.
    typical = fused_score(np.array([0.99]), np.array([0.01]), known_conf, known_dist)
    assert typical < 0.1


def test_fused_catches_a_photo_doubtful_in_both_ways_that_either_threshold_misses() -> None:
    rng = np.random.default_rng(7)
    confidences, distances = rng.uniform(0.0, 1.0, 1000), rng.uniform(0.0, 1.0, 1000)
    fused = calibrate_unknown(confidences, distances, 0.02, "fused")
    both = calibrate_unknown(confidences, distances, 0.02, "both")
    assert fused.rejected_share <= 0.02 and fused.probability == 0.0
    assert fused.known_confidences is not None and fused.known_distances is not None
    # 4th percentile on both scores: neither threshold of "both" (about 1% each) bites.
    photo_conf, photo_dist = np.quantile(confidences, 0.04), np.quantile(distances, 0.96)
    assert not (photo_conf < both.probability or photo_dist > both.distance)
    # Fused: p = 0.04 each, product 0.0016: smaller than all but 2% of the known photos'
    # products (two independent uniform p-values: P(product < t) = t (1 - ln t), 2% at 0.0034).
    detector = UnknownDetector(
        projection=np.eye(1, dtype=np.float32),
        offset=np.zeros(1, dtype=np.float32),
        references=np.ones((1, 1), dtype=np.float32),
        k=1,
    ).calibrated(fused)
    assert detector.fused
    assert detector.score(np.array([photo_conf]), np.array([photo_dist]))[0] > detector.threshold


@pytest.mark.parametrize(
    ("rule", "at_most"), [("probability", 4), ("distance", 4), ("both", 4), ("fused", 4)]
)
def test_each_rule_stays_within_the_budget(rule: str, at_most: int) -> None:
    rng = np.random.default_rng(3)
    confidences = rng.uniform(0.2, 1.0, 200)
    distances = rng.uniform(0.0, 0.5, 200)
    calibration = calibrate_unknown(confidences, distances, 0.02, rule)
    rejected = calibration.rejects(confidences, distances)
    if rule != "fused":
        either = (confidences < calibration.probability) | (distances > calibration.distance)
        np.testing.assert_array_equal(rejected, either)
    assert rejected.sum() <= at_most
    assert calibration.rejected_share == rejected.mean()
    if rule == "probability":
        assert calibration.distance == math.inf
    if rule == "distance":
        assert calibration.probability == 0.0
    if rule == "both":  # both thresholds bite, each at least half the budget
        assert (confidences < calibration.probability).sum() >= 2
        assert (distances > calibration.distance).sum() >= 2


def test_both_give_each_score_more_than_half_when_they_reject_the_same_photos() -> None:
    # The same 10 photos have the lowest probabilities and the largest distances.
    confidences = np.linspace(0.1, 1.0, 100)
    distances = np.linspace(1.0, 0.0, 100)
    calibration = calibrate_unknown(confidences, distances, 0.1, "both")
    assert (confidences < calibration.probability).sum() == 10
    assert (distances > calibration.distance).sum() == 10
    assert calibration.rejected_share == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown rule"):
        calibrate_unknown(confidences, distances, 0.02, "energy")


def test_the_linear_scorer_answers_unknown_far_from_training_even_when_confident() -> None:
    # Two classes along the first feature; the detector knows photos near (+-1, 0) only.
    scorer = LinearScorer(
        weights=np.array([[10.0, -10.0], [0.0, 0.0]]),
        bias=np.zeros(2),
        classes=("a", "b"),
        threshold=0.6,
        top_k=1,
    )
    detector = UnknownDetector(
        projection=np.eye(2, dtype=np.float32),
        offset=np.zeros(2, dtype=np.float32),
        references=np.array([[1.0, 0.0], [-1.0, 0.0]], dtype=np.float32),
        k=1,
        threshold=0.5,
    )
    photos = np.array([[1.0, 0.1], [1.0, 3.0]])  # both answered "a" with confidence ~1
    plain = scorer.answer(photos)
    assert plain["label"].tolist() == ["a", "a"] and not plain["is_unknown"].any()
    guarded = dataclasses.replace(scorer, detector=detector).answer(photos)
    assert guarded["is_unknown"].tolist() == [False, True]
    assert guarded["label"].tolist() == ["a", "a"]  # the guess is still given


def test_the_curve_grows_with_the_share_of_known_photos_rejected() -> None:
    rng = np.random.default_rng(5)
    known = (rng.uniform(0.6, 1.0, 500).tolist(), rng.uniform(0.0, 0.3, 500).tolist())
    unseen = (rng.uniform(0.3, 0.8, 200).tolist(), rng.uniform(0.2, 0.6, 200).tolist())
    points = open_set_curve(known, unseen, "both")
    xs, ys = zip(*points, strict=True)
    # Nothing known rejected still catches the unseen photos beyond every known one.
    assert points[0][0] == 0.0 and 0.3 < points[0][1] < 1.0
    assert list(xs) == sorted(xs) and list(ys) == sorted(ys)
    assert max(xs) <= 0.5 and ys[-1] > 0.95
    # Without distances, the probability alone: it catches fewer at the same cost.
    alone = open_set_curve((known[0], None), (unseen[0], None), "both")
    assert alone[0][0] == 0.0 and alone[0][1] < points[0][1]
