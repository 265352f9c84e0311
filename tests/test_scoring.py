"""The classifier folded into numpy (fruits/model/scoring.py) answers exactly as Spark ML does."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fruits.config import Config
from fruits.decode import ImageLimits, decode_batch
from fruits.features.featurizer import ExtractorSpec, extract_features
from fruits.model.registry import ModelRegistry
from fruits.model.scoring import predict_frame

from .conftest import KNOWN_CLASSES, UNKNOWN_CLASSES, real_photos

pytestmark = pytest.mark.spark


def _served(trained: tuple[Config, dict[str, Any]]) -> tuple[Any, ExtractorSpec]:
    config, _ = trained
    files, model = ModelRegistry(config).load()
    return model, ExtractorSpec.for_model(config, files.meta)


def test_the_folded_linear_model_gives_spark_mls_answers(
    spark: Any, trained: tuple[Config, dict[str, Any]]
) -> None:
    model, spec = _served(trained)
    scorer = model.linear_scorer()
    assert scorer is not None, "the session's model is a logistic regression"
    # Known classes and classes the model never saw (low confidence, some "unknown").
    photos = [
        p for label in (*KNOWN_CLASSES, *UNKNOWN_CLASSES) for p in real_photos("Test", label, 2)
    ]
    pixels, _ = decode_batch(
        [p.read_bytes() for p in photos], size=spec.image_size, limits=ImageLimits()
    )
    features = extract_features(pixels, spec)

    frame = spark.createDataFrame(
        pd.DataFrame({"row": range(len(photos)), "features": [f.tolist() for f in features]})
    )
    expected = model.predict(frame).orderBy("row").toPandas()
    answered = scorer.answer(features)

    assert answered["label"].tolist() == expected["label"].tolist()
    np.testing.assert_allclose(answered["confidence"], expected["confidence"], rtol=1e-9)
    assert answered["is_unknown"].tolist() == expected["is_unknown"].tolist()
    # The kind level too (each known class is its own kind here: the same answer at both).
    assert answered["kind"].tolist() == expected["kind"].tolist()
    assert answered["kind"].tolist() == [c.lower() for c in answered["label"]]
    np.testing.assert_allclose(answered["kind_confidence"], expected["kind_confidence"], rtol=1e-9)
    assert answered["variety_not_sure"].tolist() == expected["variety_not_sure"].tolist()
    assert expected["is_unknown"].any() or expected["confidence"].min() < 0.99  # a real spread
    for mine, spark_ml in zip(answered["top_k"], expected["top_k"], strict=True):
        assert [t["label"] for t in mine] == [t["label"] for t in spark_ml]
        np.testing.assert_allclose([t["prob"] for t in mine], [t["prob"] for t in spark_ml])


def test_predict_frame_answers_good_photos_and_gives_reasons_for_bad_ones(
    trained: tuple[Config, dict[str, Any]],
) -> None:
    model, spec = _served(trained)
    scorer = model.linear_scorer()
    assert scorer is not None
    kiwi = real_photos("Test", "Kiwi", 1)[0].read_bytes()
    banana = real_photos("Test", "Banana", 1)[0].read_bytes()
    contents = [kiwi, b"not a photo", banana, b"", None]  # None: deleted before it was read
    result = predict_frame(pd.Series(contents), spec, scorer)

    assert result["label"].tolist() == ["Kiwi", None, "Banana", None, None]
    assert result["reason"].tolist() == [None, "not_an_image", None, "empty", "missing"]
    assert result["image_id"].tolist() == [
        *(hashlib.sha256(content).hexdigest() for content in contents[:4]),
        None,
    ]
    assert result["top_k"][0][0] == {"label": "Kiwi", "prob": result["confidence"][0]}
    assert len(result["top_k"][2]) == 3
    assert result["is_unknown"][1] is None and pd.isna(result["confidence"][3])


def test_the_registered_model_carries_a_detector_that_sees_unseen_fruits_as_far(
    trained: tuple[Config, dict[str, Any]],
) -> None:
    """The detector travels with the version (detector.npz) into both scoring paths, and
    photos of fruits the model never saw lie farther from the training photos of the class
    they are answered than new photos of the fruits it knows."""
    model, spec = _served(trained)
    scorer = model.linear_scorer()
    assert model.detector is not None and scorer is not None and scorer.detector is not None
    # The default rule, fused: the validation photos' scores travel with it, and the threshold
    # is a -log of a product of two p-values (at least 2 * -log(1) = 0).
    assert model.unknown_rule == "fused" and model.detector.fused
    assert 0.0 < model.detector.threshold < np.inf
    assert model.detector.reference_classes is not None
    np.testing.assert_array_equal(scorer.detector.references, model.detector.references)

    def distances(labels: tuple[str, ...]) -> np.ndarray:
        photos = [p for label in labels for p in real_photos("Test", label, 3)]
        pixels, _ = decode_batch(
            [p.read_bytes() for p in photos], size=spec.image_size, limits=ImageLimits()
        )
        assert model.detector is not None and scorer is not None
        features = extract_features(pixels, spec)
        answered = scorer.probabilities(features).argmax(axis=1)
        return model.detector.distance(features, answered)

    known, unseen = distances(KNOWN_CLASSES), distances(UNKNOWN_CLASSES)
    assert np.median(unseen) > np.median(known)
