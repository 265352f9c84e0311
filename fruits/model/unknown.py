"""The "unknown" detector: how far a photo's features lie from every training photo.

A classifier's top probability says which known class a photo is closest to, not whether it is
close to any. The training photos of a class are frames of one rotating fruit, tight clusters in
the PCA space, so the distance to the nearest training photo says something the probability
does not. :class:`UnknownDetector` holds the map features -> direction in the leading principal
components (standardise and PCA folded into one affine map, as
:class:`~fruits.model.scoring.LinearScorer` folds the classifier, then unit length) and the
training photos' directions; the distance is to the k-th nearest of them (a cosine distance).

Screened on cached features with a tenth of the classes left out of training (BENCHMARKS.md,
section 3): the direction in the 64 leading components catches as many unseen photos as in all
of them or in the raw features, and keeps the detector small (~3.5 MB for 13,680 photos) for
the stream's UDF; a Mahalanobis (whitened) distance caught far fewer (12-17%); combined with
the top probability (``training.unknown_detector: both``) it catches the most.

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
]

# training.unknown_detector: what makes an answer "unknown".
#   distance: the photo is far from every training photo (the detector alone);
#   probability: the top class probability is low (the model's own doubt alone);
#   both: either, each given the same share, as large as their union stays within the budget.
UNKNOWN_RULES = ("distance", "probability", "both")

# Rows of reference points per distance block: bounds the (photos x references) matrix.
_BLOCK = 4096


@dataclass(frozen=True)
class UnknownDetector:
    """``distance(features)``: from the unit direction of ``features @ projection + offset`` to
    the ``k``-th nearest of ``references``; above ``threshold``: unknown. Picklable, a few MB."""

    projection: np.ndarray  # (feature_dim, dims) float32
    offset: np.ndarray  # (dims,) float32
    references: np.ndarray  # (n_references, dims) float32: training photos, unit length
    k: int
    threshold: float = math.inf

    def embed(self, features: np.ndarray) -> np.ndarray:
        return _unit(np.asarray(features, dtype=np.float32) @ self.projection + self.offset)

    def distance(self, features: np.ndarray) -> np.ndarray:
        """(N, feature_dim) -> (N,) distance to the k-th nearest reference point (0..2)."""
        return _kth_distance(self.embed(features), self.references, self.k)

    def is_unknown(self, features: np.ndarray) -> np.ndarray:
        unknown: np.ndarray = self.distance(features) > self.threshold
        return unknown

    def calibrated(self, threshold: float) -> UnknownDetector:
        return replace(self, threshold=float(threshold))

    # -- files ------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        np.savez(
            path,
            projection=self.projection,
            offset=self.offset,
            references=self.references,
            k=np.int64(self.k),
            threshold=np.float64(self.threshold),
        )

    @classmethod
    def load(cls, path: Path) -> UnknownDetector:
        with np.load(path) as arrays:
            return cls(
                projection=arrays["projection"],
                offset=arrays["offset"],
                references=arrays["references"],
                k=int(arrays["k"]),
                threshold=float(arrays["threshold"]),
            )


def fit_detector(
    *,
    mean: np.ndarray,
    std: np.ndarray,
    components: np.ndarray,
    train_points: np.ndarray,
    k: int,
    dims: int,
) -> UnknownDetector:
    """The detector of a pipeline standardise -> PCA: ``components`` (feature_dim x n, as
    Spark's PCA, largest variance first; it does not centre), the training photos' PCA points
    (rows), and how many leading components the distance uses."""
    dims = min(dims, components.shape[1])
    leading = np.asarray(components, dtype=np.float64)[:, :dims]
    inverse_std = np.divide(1.0, std, out=np.zeros_like(std, dtype=np.float64), where=std != 0)
    projection = inverse_std[:, None] * leading
    offset = -(np.asarray(mean, dtype=np.float64) * inverse_std) @ leading
    points = np.asarray(train_points, dtype=np.float64)[:, :dims]
    return UnknownDetector(
        projection=projection.astype(np.float32),
        offset=offset.astype(np.float32),
        references=_unit(points).astype(np.float32),
        k=k,
    )


@dataclass(frozen=True)
class Calibration:
    probability: float  # unknown below this top probability (0: never)
    distance: float  # unknown above this distance (inf: never)
    rejected_share: float  # of the calibration photos, answered unknown by both together


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
