"""The "unknown" detector: how far a photo's features lie from the training photos of the class
the model answers, fused with the model's own top probability.

A classifier's top probability says which known class a photo is closest to, not whether it is
close to any. The training photos of a class are frames of one rotating fruit, tight clusters,
so the distance to the nearest training photo *of the answered class* says something the
probability does not: a fruit never taught lands near some class in probability while far from
that class's frames. :class:`UnknownDetector` holds the map features -> direction (a linear map,
then unit length), the training photos' directions and their classes; the distance is a cosine
distance to the k-th nearest of them (of the answered class, when the classes are kept).

The map is the ``training.unknown_dims`` leading directions of the training photos'
unit-length features (an uncentred SVD: a cosine distance in the raw feature space, kept small
because the stream's UDF carries it). ``training.unknown_detector: fused``, the default,
answers "unknown" when the two scores' p-values among the honest validation photos, multiplied
(Fisher's method), are smaller than those of all but ``training.unknown_reject_share`` of those
photos: a photo somewhat doubtful in both ways is caught, where an OR of two thresholds needs
one score alone to be extreme.

Chosen by leaving classes out *within Training*, so that Test never picks it: of the candidate
detectors it catches the most photos of classes never taught at the same share of known photos
rejected (BENCHMARKS.md, section 3c, The "unknown" detector chosen within Training).

Pure numpy: the same object answers in the stream's pandas UDF, in Spark ML's path for the trees
(:meth:`~fruits.model.classifier.FruitModel.predict`), in the MLflow pyfunc and in evaluate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

__all__ = [
    "UNKNOWN_RULES",
    "Calibration",
    "UnknownDetector",
    "calibrate_unknown",
    "distance_threshold",
    "fit_detector",
    "fused_score",
]

# training.unknown_detector: what makes an answer "unknown".
#   fused: the top probability's and the distance's p-values among the calibration photos,
#     multiplied, too small (Fisher's method; the default);
#   distance: the photo is far from the training photos (the detector alone);
#   probability: the top class probability is low (the model's own doubt alone);
#   both: either threshold, each given the same share, as large as their union stays within
#     the budget.
UNKNOWN_RULES = ("fused", "distance", "probability", "both")

# Rows of reference points per distance block: bounds the (photos x references) matrix.
_BLOCK = 4096


@dataclass(frozen=True)
class UnknownDetector:
    """``distance(features, answered)``: from the unit direction of ``features @ projection +
    offset`` to the ``k``-th nearest of ``references`` (of the answered class when
    ``reference_classes`` is kept); ``score`` turns (top probability, distance) into one
    number, unknown above ``threshold``. Picklable, a few MB."""

    projection: np.ndarray  # (feature_dim, dims) float32
    offset: np.ndarray  # (dims,) float32
    references: np.ndarray  # (n_references, dims) float32: training photos, unit length
    k: int
    threshold: float = math.inf
    # Each reference's class (its index in the model's classes); None: any class counts.
    reference_classes: np.ndarray | None = None
    # The rule "fused": the calibration photos' top probabilities and distances, sorted; the
    # score is then -log of the product of a photo's two p-values among them. None: the score
    # is the distance itself.
    known_confidences: np.ndarray | None = None
    known_distances: np.ndarray | None = None

    @property
    def fused(self) -> bool:
        return self.known_confidences is not None and self.known_distances is not None

    def embed(self, features: np.ndarray) -> np.ndarray:
        return _unit(np.asarray(features, dtype=np.float32) @ self.projection + self.offset)

    def distance(self, features: np.ndarray, answered: np.ndarray | None = None) -> np.ndarray:
        """(N, feature_dim) -> (N,) distance to the k-th nearest reference point (0..2); with
        ``answered`` (each photo's class index) and kept classes, among that class's only."""
        points = self.embed(features)
        if self.reference_classes is None:
            return _kth_distance(points, self.references, self.k)
        if answered is None:
            raise ValueError("this detector measures within the answered class: pass answered")
        answered = np.asarray(answered, dtype=np.int64)
        distances = np.full(len(points), 2.0)  # a class without references: as far as can be
        for cls in np.unique(answered):
            rows = answered == cls
            references = self.references[self.reference_classes == cls]
            if len(references):
                distances[rows] = _kth_distance(points[rows], references, self.k)
        return distances

    def score(self, confidences: np.ndarray, distances: np.ndarray) -> np.ndarray:
        """The number compared with ``threshold``: the fused -log(p_probability * p_distance)
        for the rule "fused", else the distance."""
        distances = np.asarray(distances, dtype=np.float64)
        if not self.fused:
            return distances
        assert self.known_confidences is not None and self.known_distances is not None
        return fused_score(
            np.asarray(confidences, dtype=np.float64),
            distances,
            self.known_confidences,
            self.known_distances,
        )

    def is_unknown(
        self, features: np.ndarray, confidences: np.ndarray, answered: np.ndarray | None
    ) -> np.ndarray:
        scores = self.score(confidences, self.distance(features, answered))
        unknown: np.ndarray = scores > self.threshold
        return unknown

    def calibrated(self, calibration: Calibration | float) -> UnknownDetector:
        """This detector with a calibration's threshold (and, fused, its reference scores)."""
        if not isinstance(calibration, Calibration):
            return replace(self, threshold=float(calibration))
        return replace(
            self,
            threshold=float(calibration.distance),
            known_confidences=calibration.known_confidences,
            known_distances=calibration.known_distances,
        )

    # -- files ------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        optional = {
            name: value
            for name in ("reference_classes", "known_confidences", "known_distances")
            if (value := getattr(self, name)) is not None
        }
        np.savez(
            path,
            projection=self.projection,
            offset=self.offset,
            references=self.references,
            k=np.int64(self.k),
            threshold=np.float64(self.threshold),
            **optional,
        )

    @classmethod
    def load(cls, path: Path) -> UnknownDetector:
        with np.load(path) as arrays:

            def optional(name: str) -> np.ndarray | None:
                return arrays[name] if name in arrays.files else None

            return cls(
                projection=arrays["projection"],
                offset=arrays["offset"],
                references=arrays["references"],
                k=int(arrays["k"]),
                threshold=float(arrays["threshold"]),
                reference_classes=optional("reference_classes"),
                known_confidences=optional("known_confidences"),
                known_distances=optional("known_distances"),
            )


def fit_detector(
    train_features: np.ndarray, train_classes: np.ndarray | None, *, k: int, dims: int
) -> UnknownDetector:
    """The detector over these training photos (rows of raw features, and their class
    indices; None: any class counts): the ``dims`` leading directions of their unit-length
    features (an uncentred SVD, so the distance is a cosine distance in the feature space seen
    through its main directions)."""
    unit = _unit(np.asarray(train_features, dtype=np.float64))
    # The right singular vectors of the unit rows, from their Gram matrix (feature_dim^2):
    # cheaper than an SVD of the (photos x features) matrix and the same directions.
    eigenvalues, eigenvectors = np.linalg.eigh(unit.T @ unit)
    dims = min(dims, unit.shape[1])
    projection = eigenvectors[:, np.argsort(eigenvalues)[::-1][:dims]]
    return UnknownDetector(
        projection=projection.astype(np.float32),
        offset=np.zeros(dims, dtype=np.float32),
        references=_unit(unit @ projection).astype(np.float32),
        k=k,
        reference_classes=None
        if train_classes is None
        else np.asarray(train_classes, dtype=np.int32),
    )


@dataclass(frozen=True)
class Calibration:
    probability: float  # unknown below this top probability (0: never)
    # Unknown above this distance (inf: never); for the rule "fused", above this fused score.
    distance: float
    rejected_share: float  # of the calibration photos, answered unknown
    # "fused": the calibration photos' scores, sorted, that the p-values are taken among.
    known_confidences: np.ndarray | None = None
    known_distances: np.ndarray | None = None

    def rejects(self, confidences: np.ndarray, distances: np.ndarray) -> np.ndarray:
        """Which of these photos (top probability, distance) these thresholds answer unknown."""
        if self.known_confidences is not None and self.known_distances is not None:
            scores = fused_score(
                confidences, distances, self.known_confidences, self.known_distances
            )
            fused: np.ndarray = scores > self.distance
            return fused
        either: np.ndarray = (confidences < self.probability) | (distances > self.distance)
        return either


def calibrate_unknown(
    confidences: Sequence[float] | np.ndarray,
    distances: Sequence[float] | np.ndarray,
    reject_share: float,
    rule: str,
) -> Calibration:
    """Thresholds that answer at most ``reject_share`` of these known photos "unknown"."""
    from fruits.model.metrics import unknown_threshold

    if rule not in UNKNOWN_RULES:
        raise ValueError(f"unknown rule {rule!r}: one of {', '.join(UNKNOWN_RULES)}")
    conf = np.asarray(confidences, dtype=np.float64)
    dist = np.asarray(distances, dtype=np.float64)

    if rule == "fused":
        known_conf, known_dist = np.sort(conf), np.sort(dist)
        scores = fused_score(conf, dist, known_conf, known_dist)
        threshold = distance_threshold(scores, reject_share)
        return Calibration(
            0.0,
            threshold,
            float((scores > threshold).mean()) if len(scores) else 0.0,
            known_conf,  # float64: the scores are compared in float64, rank for rank
            known_dist,
        )

    def thresholds(share: float) -> Calibration:
        probability = unknown_threshold(conf, share) if rule != "distance" else 0.0
        distance = distance_threshold(dist, share) if rule != "probability" else math.inf
        rejected = (conf < probability) | (dist > distance)
        return Calibration(probability, distance, float(rejected.mean()) if len(conf) else 0.0)

    if rule != "both":
        return thresholds(reject_share)
    # Both: each score gets the same share, as large as the union allows. The two reject many
    # of the same photos, so each gets more than half of the budget.
    best = thresholds(reject_share / 2)
    step = 1.0 / max(len(conf), 1)
    share = reject_share / 2 + step
    while share <= reject_share + 1e-12:
        candidate = thresholds(share)
        if candidate.rejected_share > reject_share + 1e-12:
            break
        best = candidate
        share += step
    return best


def fused_score(
    confidences: np.ndarray,
    distances: np.ndarray,
    known_confidences: np.ndarray,
    known_distances: np.ndarray,
) -> np.ndarray:
    """-log(p_probability * p_distance): each p-value is the share of the (sorted) known
    photos' scores at least as extreme (probability as low, distance as far), with one added
    to both counts so that it is never 0. Larger: more unknown."""
    n = len(known_confidences)
    as_low = np.searchsorted(known_confidences, confidences, side="right")
    as_far = n - np.searchsorted(known_distances, distances, side="left")
    fused: np.ndarray = -(np.log((as_low + 1) / (n + 1)) + np.log((as_far + 1) / (n + 1)))
    return fused


def distance_threshold(known_distances: Sequence[float] | np.ndarray, reject_share: float) -> float:
    """The smallest threshold that rejects at most ``reject_share`` of these known photos (a
    photo is unknown when its distance is strictly above the threshold)."""
    distances = np.sort(np.asarray(known_distances, dtype=np.float64))[::-1]
    if len(distances) == 0:
        return math.inf
    allowed = math.floor(reject_share * len(distances))
    # Everything strictly above distances[allowed] is rejected: at most `allowed` photos.
    return float(distances[allowed]) if allowed < len(distances) else 0.0


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: np.ndarray = rows / np.maximum(norms, 1e-12)
    return unit


def _kth_distance(points: np.ndarray, references: np.ndarray, k: int) -> np.ndarray:
    if len(points) == 0:
        return np.zeros(0, dtype=np.float64)
    k = min(k, len(references))
    squared_points = (points.astype(np.float64) ** 2).sum(axis=1)
    nearest = np.full((len(points), k), np.inf)
    for start in range(0, len(references), _BLOCK):
        block = references[start : start + _BLOCK]
        squared = (
            squared_points[:, None]
            - 2.0 * (points @ block.T).astype(np.float64)
            + (block.astype(np.float64) ** 2).sum(axis=1)[None, :]
        )
        merged = np.concatenate([nearest, squared], axis=1)
        nearest = np.partition(merged, k - 1, axis=1)[:, :k]
    kth: np.ndarray = np.sqrt(np.maximum(np.sort(nearest, axis=1)[:, k - 1], 0.0))
    return kth
