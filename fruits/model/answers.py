"""From class probabilities to the answer a user reads, at two levels: the kind and the variety.

Every class is a variety of a kind (fruits/model/taxonomy.py). A photo's answer:

* ``label``, ``confidence``, ``top_k``: the most probable variety, its probability, the
  ``top_k`` most probable varieties;
* ``kind``, ``kind_confidence``: the most probable kind, the summed probability of its
  varieties (a photo split between two apple varieties is still surely an apple);
* ``is_unknown``: not even the kind is known: the kind's confidence fails the model's unknown
  rule (fruits/model/unknown.py: the probability threshold, the distance to the training
  photos, or both fused), the same rule and operating point as the variety's;
* ``variety_not_sure``: the kind is known but the variety is not: the variety's confidence
  fails that rule, or is below the answered variety's own threshold (calibrated per domain on
  validation photos: :func:`calibrate_variety_threshold`), or the most probable variety is not
  of the most probable kind. The app says "a tomato, variety not sure" rather than a wrong
  variety or "unknown".

One implementation for every path: the stream's numpy scorer (fruits/model/scoring.py), Spark
ML's scoring of the trees and of batch evaluation (fruits/model/classifier.py, through a
pandas UDF) and so the pyfunc. Pure numpy; no Spark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
import pandas as pd

from fruits.model.taxonomy import default_taxonomy
from fruits.model.unknown import UnknownDetector

__all__ = [
    "ANSWER_COLUMNS",
    "ANSWER_SCHEMA",
    "VARIETY_THRESHOLDS",
    "AnswerRule",
    "calibrate_variety_threshold",
    "kinds_of",
]

# The probabilities a variety threshold is chosen among (calibrate_variety_threshold).
VARIETY_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(20))

# The answer's columns, in the tables' order (fruits/sinks/tables.py).
ANSWER_COLUMNS = (
    "label",
    "confidence",
    "top_k",
    "is_unknown",
    "kind",
    "kind_confidence",
    "variety_not_sure",
)
ANSWER_SCHEMA = (
    "label string, confidence double, top_k array<struct<label: string, prob: double>>, "
    "is_unknown boolean, kind string, kind_confidence double, variety_not_sure boolean"
)


def kinds_of(classes: Sequence[str], kinds: Sequence[str] | None = None) -> tuple[str, ...]:
    """Each class's kind: ``kinds`` when given (a model's own, saved with it), else the
    package's taxonomy (a model trained before kinds existed)."""
    if kinds:
        if len(kinds) != len(classes):
            raise ValueError(f"{len(kinds)} kinds for {len(classes)} classes")
        return tuple(kinds)
    taxonomy = default_taxonomy()
    return tuple(taxonomy.kind(c) for c in classes)


class AnswersLikeAModel(Protocol):
    """What a model keeps of its answer rule (FruitModel, LinearScorer)."""

    @property
    def classes(self) -> tuple[str, ...]: ...
    @property
    def kinds(self) -> tuple[str, ...]: ...
    @property
    def threshold(self) -> float: ...
    @property
    def top_k(self) -> int: ...
    @property
    def detector(self) -> UnknownDetector | None: ...
    @property
    def variety_thresholds(self) -> tuple[float, ...]: ...


@dataclass(frozen=True)
class AnswerRule:
    """What a model answers from its class probabilities; picklable (shipped to the UDFs)."""

    classes: tuple[str, ...]
    kinds: tuple[str, ...]  # the kind of each class, in the order of ``classes``
    threshold: float  # "not sure" below this probability (the variety's, or the kind's)
    top_k: int
    detector: UnknownDetector | None = None
    # Per class: its variety is "not sure" below this probability (empty: no such threshold).
    variety_thresholds: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.variety_thresholds and len(self.variety_thresholds) != len(self.classes):
            raise ValueError(
                f"{len(self.variety_thresholds)} variety thresholds for {len(self.classes)} classes"
            )

    @classmethod
    def of(cls, model: AnswersLikeAModel) -> AnswerRule:
        """A model's rule; its kinds, or the package's taxonomy's for a model without them."""
        return cls(
            model.classes,
            kinds_of(model.classes, model.kinds),
            model.threshold,
            model.top_k,
            model.detector,
            model.variety_thresholds,
        )

    @cached_property
    def _kind_names(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The kinds' names, each class's kind (an index) and the (n_classes, n_kinds) 0/1
        matrix that sums a row's varieties into its kinds: once per rule, not per batch."""
        names, of_class = np.unique(np.asarray(self.kinds, dtype=object), return_inverse=True)
        return names, of_class, np.eye(len(names))[of_class]

    def answer(
        self, features: np.ndarray, probabilities: np.ndarray, *, with_distance: bool = False
    ) -> pd.DataFrame:
        """(N, feature_dim) features and their (N, n_classes) probabilities -> the
        :data:`ANSWER_COLUMNS` per row (plus ``unknown_distance``, the detector's distance or
        NaN without one, with ``with_distance``)."""
        probs = np.asarray(probabilities, dtype=np.float64)
        n = len(probs)
        # Highest first; an exact tie (never seen in float64) goes to the earlier class.
        ranked = np.argsort(-probs, axis=1, kind="stable")[:, : self.top_k]
        top_probs = np.take_along_axis(probs, ranked, axis=1)
        answered = ranked[:, 0]
        kind_names, kind_of_class, kind_sum = self._kind_names
        kind_probs = probs @ kind_sum  # each kind's varieties summed
        top_kind = np.argmax(kind_probs, axis=1)
        kind_confidence = kind_probs[np.arange(n), top_kind]

        distance = np.full(n, np.nan)
        if self.detector is not None and n:
            distance = self.detector.distance(features, answered)
        variety_unsure = self._fails(top_probs[:, 0], distance)
        if self.variety_thresholds and n:
            own = np.asarray(self.variety_thresholds, dtype=np.float64)[answered]
            variety_unsure |= top_probs[:, 0] < own
        kind_unknown = self._fails(kind_confidence, distance)
        other_kind = kind_of_class[answered] != top_kind
        classes = np.asarray(self.classes, dtype=object)
        frame = pd.DataFrame(
            {
                "label": classes[answered],
                "confidence": top_probs[:, 0],
                "top_k": [
                    [
                        {"label": classes[c], "prob": float(p)}
                        for c, p in zip(row, row_probs, strict=True)
                    ]
                    for row, row_probs in zip(ranked, top_probs, strict=True)
                ],
                "is_unknown": kind_unknown,
                "kind": kind_names[top_kind] if n else np.array([], dtype=object),
                "kind_confidence": kind_confidence,
                "variety_not_sure": ~kind_unknown & (variety_unsure | other_kind),
            }
        )
        if with_distance:
            frame["unknown_distance"] = distance
        return frame

    def _fails(self, confidence: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """The unknown rule on a level's confidence (the distance is the answered variety's)."""
        fails: np.ndarray = confidence < self.threshold
        if self.detector is not None:
            fails |= self.detector.score(confidence, distance) > self.detector.threshold
        return fails


def calibrate_variety_threshold(
    confidence: np.ndarray, sure: np.ndarray, variety_right: np.ndarray, wrong_share: float
) -> float:
    """The lowest of :data:`VARIETY_THRESHOLDS` below which answering "variety not sure" leaves
    at most ``wrong_share`` of these validation photos answered a wrong variety as sure.

    ``confidence``: each photo's answered variety's probability; ``sure``: the variety was
    given as sure by the rest of the rule; ``variety_right``: it is the photo's. The highest
    candidate when none is enough (a domain whose varieties are beyond the features); 0 for no
    photos.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    sure, right = np.asarray(sure, dtype=bool), np.asarray(variety_right, dtype=bool)
    if len(confidence) == 0:
        return 0.0
    for threshold in VARIETY_THRESHOLDS:
        wrong = sure & ~right & (confidence >= threshold)
        if wrong.mean() <= wrong_share:
            return threshold
    return VARIETY_THRESHOLDS[-1]
