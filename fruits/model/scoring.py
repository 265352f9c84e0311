"""Photo bytes -> answer in one pass on a Spark worker: features, then the classifier in numpy.

The trained pipeline standardise -> PCA -> multinomial logistic regression is linear up to the
softmax, so it folds into one affine map (``features @ weights + bias`` gives the class
margins). :class:`LinearScorer` holds that map; :func:`predict_udf` runs it right after the
featurizer, in the same pandas UDF. A micro-batch is then a single Spark job whose rows come
back already answered: no features column through the JVM, no Spark ML plan per batch.

Models whose classifier is not linear (the trees) are scored by Spark ML instead
(``FruitModel.predict``); both give the same answers for a linear model
(tests/test_scoring.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from fruits.decode import Rejection
from fruits.features.featurizer import ExtractorSpec, featurize_photos, photo_ids, prepare_backend
from fruits.model.answers import ANSWER_COLUMNS, ANSWER_SCHEMA, AnswerRule
from fruits.model.unknown import UnknownDetector

__all__ = ["PREDICTION_RESULT_SCHEMA", "LinearScorer", "predict_frame", "predict_udf"]

# The UDF's result: the photo's sha256, and an answer for a usable photo or a quarantine reason
# and detail for any other.
PREDICTION_RESULT_SCHEMA = f"image_id string, {ANSWER_SCHEMA}, reason string, detail string"


@dataclass(frozen=True)
class LinearScorer:
    """Class probabilities = softmax(features @ weights + bias); picklable, a few MB."""

    weights: np.ndarray  # (feature_dim, n_classes), float64
    bias: np.ndarray  # (n_classes,)
    classes: tuple[str, ...]
    threshold: float  # below this top probability, the answer is "unknown"
    top_k: int
    # Also "unknown" when the detector says so (far from the answered class's training
    # photos, fused with the probability); None: the probability alone (fruits/model/unknown.py).
    detector: UnknownDetector | None = None
    # Each class's kind (fruits/model/answers.py); empty: the package's taxonomy says.
    kinds: tuple[str, ...] = ()
    # Per class: "variety not sure" below this probability (answers.py); empty: none.
    variety_thresholds: tuple[float, ...] = ()

    @cached_property  # once per scorer (a UDF answers many batches with it)
    def rule(self) -> AnswerRule:
        return AnswerRule.of(self)

    @classmethod
    def fold(
        cls,
        *,
        mean: np.ndarray,
        std: np.ndarray,
        components: np.ndarray,
        coefficients: np.ndarray,
        intercepts: np.ndarray,
        classes: tuple[str, ...],
        threshold: float,
        top_k: int,
        detector: UnknownDetector | None = None,
        kinds: tuple[str, ...] = (),
        variety_thresholds: tuple[float, ...] = (),
    ) -> LinearScorer:
        """Fold standardise ((x - mean) / std, 0 where std is 0, as Spark's StandardScaler),
        PCA (``components``: feature_dim x k; Spark's PCA does not centre) and the logistic
        regression (``coefficients``: n_classes x k) into one map."""
        inverse_std = np.divide(1.0, std, out=np.zeros_like(std), where=std != 0)
        projection = (inverse_std[:, None] * components) @ coefficients.T  # (d, n_classes)
        bias = intercepts - (mean * inverse_std) @ components @ coefficients.T
        return cls(projection, bias, classes, threshold, top_k, detector, kinds, variety_thresholds)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        margins = features.astype(np.float64) @ self.weights + self.bias
        margins -= margins.max(axis=1, keepdims=True)  # a stable softmax
        exp = np.exp(margins)
        probabilities: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return probabilities

    def answer(self, features: np.ndarray) -> pd.DataFrame:
        """(N, feature_dim) -> the answer's columns per row (fruits/model/answers.py)."""
        return self.rule.answer(features, self.probabilities(features))


def predict_frame(contents: pd.Series, spec: ExtractorSpec, scorer: LinearScorer) -> pd.DataFrame:
    """One Arrow batch: photo bytes -> image_id, then the answer (label, confidence, kind...) for
    usable photos or (reason, detail) for the others; one model call and one matrix product per
    batch."""
    features, results = featurize_photos(contents, spec)
    rejections = [r if isinstance(r, Rejection) else None for r in results]
    usable = [i for i, rejection in enumerate(rejections) if rejection is None]
    columns: dict[str, list[Any]] = {name: [None] * len(results) for name in ANSWER_COLUMNS}
    if usable:
        answers = scorer.answer(features)
        for name, values in columns.items():
            for position, value in zip(usable, answers[name].tolist(), strict=True):
                values[position] = value
    return pd.DataFrame(
        {
            "image_id": photo_ids(contents),
            **columns,
            "reason": [r.reason if r else None for r in rejections],
            "detail": [r.detail if r else None for r in rejections],
        }
    )


def predict_udf(spec: ExtractorSpec, scorer: LinearScorer) -> Any:
    """A Spark iterator pandas UDF: ``content`` (binary) -> struct(image_id, the answer's
    columns, reason, detail). Called on the driver, which makes the backend ready."""
    from pyspark.sql.pandas.functions import pandas_udf

    prepare_backend(spec)

    @pandas_udf(PREDICTION_RESULT_SCHEMA)  # type: ignore[call-overload, untyped-decorator]
    def predict(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        for contents in batches:
            yield predict_frame(contents, spec, scorer)

    return predict
