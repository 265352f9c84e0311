"""Evaluation arithmetic: pure functions over labels, no Spark."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "classification_report",
    "cumulative_components",
    "open_set_curve",
    "open_set_report",
    "standardized_variance_shares",
    "two_level_report",
    "unknown_threshold",
]


def standardized_variance_shares(correlation: np.ndarray, constant: np.ndarray) -> np.ndarray:
    """Explained-variance share of each principal component of *standardised* data.

    Those are the eigenvalues of the correlation matrix, largest first, over their sum.
    ``constant`` marks zero-variance features (dead ReLUs): StandardScaler maps them to 0, so
    they carry no variance, whatever the correlation matrix holds for them (NaN, or 1 on the
    diagonal). Only the eigenvalues are needed, so ``eigvalsh`` (symmetric, no vectors) rather
    than the full SVD that Spark's PCA runs.
    """
    matrix = np.nan_to_num(np.array(correlation, dtype=np.float64), nan=0.0)
    constant = np.asarray(constant, dtype=bool)
    matrix[constant, :] = 0.0
    matrix[:, constant] = 0.0
    eigenvalues = np.clip(np.linalg.eigvalsh(matrix)[::-1], 0.0, None)
    total = eigenvalues.sum()
    shares: np.ndarray = eigenvalues / total if total > 0 else eigenvalues
    return shares


def cumulative_components(explained: Sequence[float] | np.ndarray, target: float) -> int:
    """Fewest leading components whose explained-variance shares add up to ``target``."""
    cumulative = np.cumsum(np.asarray(explained, dtype=np.float64))
    reached = np.nonzero(cumulative >= target - 1e-12)[0]
    return int(reached[0]) + 1 if len(reached) else len(cumulative)


def unknown_threshold(max_probs: Sequence[float] | np.ndarray, reject_share: float) -> float:
    """The highest threshold that rejects at most ``reject_share`` of these (known) images.

    An image is "unknown" when its top class probability is strictly below the threshold.
    """
    probs = np.sort(np.asarray(max_probs, dtype=np.float64))
    if len(probs) == 0:
        return 0.0
    allowed = math.floor(reject_share * len(probs))
    # Everything strictly below probs[allowed] is rejected: at most `allowed` images.
    return float(probs[allowed]) if allowed < len(probs) else 1.0


def classification_report(
    true: Sequence[str], predicted: Sequence[str], classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix (rows = true)."""
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(true, predicted, strict=True):
        if t in index and p in index:
            matrix[index[t], index[p]] += 1
    correct = sum(1 for t, p in zip(true, predicted, strict=True) if t == p)
    per_class: dict[str, dict[str, float]] = {}
    for c, i in index.items():
        tp = int(matrix[i, i])
        support = int(sum(1 for t in true if t == c))
        predicted_c = int(sum(1 for p in predicted if p == c))
        precision = tp / predicted_c if predicted_c else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": support,
        }
    return {
        "n_images": len(true),
        "accuracy": correct / len(true) if len(true) else float("nan"),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def open_set_report(
    true: Sequence[str],
    predicted: Sequence[str],
    is_unknown: Sequence[bool],
    known_classes: Sequence[str],
) -> dict[str, Any]:
    """Scores for a folder that may mix classes the model knows with classes it does not.

    ``accuracy``: top-1 label correct, over images of known classes. ``known_rejected``: share
    answered "unknown" among those (a cost: the model knew). ``unseen_caught``: share answered
    "unknown" among the photos of classes the model was never taught (the point of it).
    """
    known = set(known_classes)
    known_rows = [i for i, t in enumerate(true) if t in known]
    other_rows = [i for i, t in enumerate(true) if t not in known]

    def share(rows: list[int], hit: Any) -> float | None:
        return sum(1 for i in rows if hit(i)) / len(rows) if rows else None

    return {
        "n_images": len(true),
        "n_known_class": len(known_rows),
        "n_unknown_class": len(other_rows),
        "accuracy": share(known_rows, lambda i: predicted[i] == true[i]),
        "known_rejected": share(known_rows, lambda i: is_unknown[i]),
        "unseen_caught": share(other_rows, lambda i: is_unknown[i]),
    }


# Target reject shares the curve is drawn at: 0 to 50% by steps of 0.5%.
CURVE_SHARES = tuple(step / 200 for step in range(101))


def open_set_curve(
    known: tuple[Sequence[float], Sequence[float] | None],
    unseen: tuple[Sequence[float], Sequence[float] | None],
    rule: str,
    shares: Sequence[float] = CURVE_SHARES,
) -> list[tuple[float, float]]:
    """(known photos rejected, unseen photos caught) as the "unknown" thresholds move.

    ``known`` and ``unseen``: each photo's (top probability, detector distance or None). For
    each target share, the thresholds are set on the known photos' own scores as training sets
    them on validation (``rule``: fused, probability, distance or both); the point is what they
    then reject of each side.
    """
    from fruits.model.unknown import Calibration, calibrate_unknown

    known_conf = np.asarray(known[0], dtype=np.float64)
    unseen_conf = np.asarray(unseen[0], dtype=np.float64)
    if known[1] is None or unseen[1] is None:
        rule = "probability"
    known_dist = np.asarray(known[1] if known[1] is not None else np.zeros(len(known_conf)))
    unseen_dist = np.asarray(unseen[1] if unseen[1] is not None else np.zeros(len(unseen_conf)))

    def rejected(conf: np.ndarray, dist: np.ndarray, calibration: Calibration) -> float:
        hit = calibration.rejects(conf, dist)
        return float(hit.mean()) if len(hit) else 0.0

    points = []
    for share in shares:
        calibration = calibrate_unknown(known_conf, known_dist, share, rule)
        points.append(
            (
                rejected(known_conf, known_dist, calibration),
                rejected(unseen_conf, unseen_dist, calibration),
            )
        )
    return points


def two_level_report(
    true_kinds: Sequence[str],
    true_labels: Sequence[str],
    kinds: Sequence[str | None],
    labels: Sequence[str | None],
    is_unknown: Sequence[bool],
    variety_not_sure: Sequence[bool],
) -> dict[str, Any]:
    """The answers at both levels (fruits/model/answers.py) against the truth, as shares of
    the photos. Every photo is in exactly one of: ``variety_right`` (the variety, sure),
    ``kind_right_variety_not_sure``, ``answered_unknown`` and ``confidently_wrong`` (a wrong
    kind, or a wrong variety given as sure); ``kind_right`` is the first two together.

    For photos of a variety the model never saw, the right answers are "unknown" or "<its
    kind>, variety not sure": ``unknown_or_right_kind``."""
    n = len(true_labels)
    if not n:
        return {"n_images": 0}
    answered = [not u for u in is_unknown]
    kind_right = [a and k == t for a, k, t in zip(answered, kinds, true_kinds, strict=True)]
    sure_right = [
        r and not s and p == t
        for r, s, p, t in zip(kind_right, variety_not_sure, labels, true_labels, strict=True)
    ]
    not_sure_right = [r and s for r, s in zip(kind_right, variety_not_sure, strict=True)]
    unknown = sum(1 for u in is_unknown if u)
    return {
        "n_images": n,
        "kind_right": sum(kind_right) / n,
        "variety_right": sum(sure_right) / n,
        "kind_right_variety_not_sure": sum(not_sure_right) / n,
        "answered_unknown": unknown / n,
        "confidently_wrong": (n - unknown - sum(sure_right) - sum(not_sure_right)) / n,
        "unknown_or_right_kind": (unknown + sum(not_sure_right)) / n,
    }
