"""The answer at two levels: a kind is known when its varieties together are sure enough."""

from __future__ import annotations

import numpy as np
import pytest

from fruits.model.answers import (
    ANSWER_COLUMNS,
    AnswerRule,
    calibrate_variety_threshold,
    kinds_of,
)

CLASSES = ("Apple Braeburn", "Apple Granny Smith", "Banana", "Tomato 1")
RULE = AnswerRule(CLASSES, kinds_of(CLASSES), threshold=0.6, top_k=2)


def _answer(*probabilities: list[float]) -> list[dict[str, object]]:
    probs = np.array(probabilities)
    frame = RULE.answer(np.zeros((len(probs), 3)), probs)
    assert tuple(frame.columns) == ANSWER_COLUMNS
    return frame.to_dict("records")


def test_a_sure_variety_is_answered_with_its_kind() -> None:
    (sure,) = _answer([0.05, 0.9, 0.03, 0.02])
    assert sure["label"] == "Apple Granny Smith" and sure["kind"] == "apple"
    assert sure["kind_confidence"] == pytest.approx(0.95)
    assert not sure["is_unknown"] and not sure["variety_not_sure"]
    assert [t["label"] for t in sure["top_k"]] == ["Apple Granny Smith", "Apple Braeburn"]


def test_two_varieties_of_one_kind_make_the_kind_sure_and_the_variety_not() -> None:
    (split,) = _answer([0.4, 0.45, 0.1, 0.05])
    assert split["kind"] == "apple" and split["kind_confidence"] == pytest.approx(0.85)
    assert not split["is_unknown"] and split["variety_not_sure"]
    assert split["label"] == "Apple Granny Smith"  # the best guess is still given


def test_the_most_probable_kind_wins_over_the_most_probable_variety() -> None:
    # Banana is the single most probable class, but the apples together are surer.
    (answer,) = _answer([0.33, 0.32, 0.35, 0.0])
    assert answer["kind"] == "apple" and answer["label"] == "Banana"
    assert not answer["is_unknown"] and answer["variety_not_sure"]


def test_nothing_sure_is_unknown_and_no_photo_is_an_empty_answer() -> None:
    (unsure,) = _answer([0.2, 0.2, 0.3, 0.3])
    assert unsure["is_unknown"] and not unsure["variety_not_sure"]
    empty = RULE.answer(np.zeros((0, 3)), np.zeros((0, len(CLASSES))))
    assert list(empty.columns) == list(ANSWER_COLUMNS) and len(empty) == 0


def test_a_model_without_kinds_takes_the_taxonomy_s_and_a_wrong_count_is_an_error() -> None:
    assert kinds_of(("Banana", "Vine-Tomato", "Quince Giant")) == ("banana", "tomato", "quince")
    assert kinds_of(("A", "B"), ("x", "y")) == ("x", "y")
    with pytest.raises(ValueError, match="1 kinds for 2 classes"):
        kinds_of(("A", "B"), ("x",))


def test_status_says_each_level_as_the_app_does() -> None:
    from fruits.observe.status import spoken_answer

    row = {"label": "Vine-Tomato", "confidence": 0.41, "kind": "tomato", "kind_confidence": 0.9}
    assert spoken_answer({**row, "is_unknown": False, "variety_not_sure": False}) == (
        "Vine-Tomato, confidence 0.41"
    )
    assert spoken_answer({**row, "is_unknown": False, "variety_not_sure": True}) == (
        "a tomato, variety not sure (kind confidence 0.90; best guess Vine-Tomato, 0.41)"
    )
    assert spoken_answer({**row, "is_unknown": True, "variety_not_sure": False}) == (
        "unknown (best guess Vine-Tomato, confidence 0.41)"
    )
    # A row from before the kind level: its label is the whole answer.
    old = {"label": "Kiwi", "confidence": 0.8, "is_unknown": False}
    assert spoken_answer({**old, "kind": None, "variety_not_sure": None}) == "Kiwi, confidence 0.80"


def test_a_variety_below_its_own_threshold_is_not_sure_but_its_kind_still_is() -> None:
    # Granny Smith's varieties are look-alikes on real photos: sure only at 0.8 and above.
    rule = AnswerRule(
        CLASSES, kinds_of(CLASSES), threshold=0.6, top_k=2, variety_thresholds=(0, 0.8, 0, 0)
    )
    probs = np.array([[0.05, 0.75, 0.1, 0.1], [0.75, 0.05, 0.1, 0.1], [0.05, 0.85, 0.05, 0.05]])
    granny, braeburn, sure = rule.answer(np.zeros((3, 3)), probs).to_dict("records")
    assert granny["kind"] == "apple" and not granny["is_unknown"] and granny["variety_not_sure"]
    assert not braeburn["variety_not_sure"]  # another class keeps the model's rule alone
    assert not sure["variety_not_sure"]
    with pytest.raises(ValueError, match="2 variety thresholds for 4 classes"):
        AnswerRule(CLASSES, kinds_of(CLASSES), 0.6, 2, variety_thresholds=(0.5, 0.5))


def test_the_variety_threshold_is_the_lowest_that_keeps_sure_wrong_varieties_rare() -> None:
    confidence = np.array([0.99, 0.95, 0.9, 0.72, 0.68, 0.6, 0.55, 0.3])
    right = np.array([True, True, True, False, True, False, False, True])
    sure = np.ones(8, dtype=bool)
    # 3 of 8 sure and wrong at 0; none once 0.75 is required (0.72 and below not sure).
    assert calibrate_variety_threshold(confidence, sure, right, 0.0) == pytest.approx(0.75)
    # One of 8 allowed: 0.65 leaves only the 0.72 one.
    assert calibrate_variety_threshold(confidence, sure, right, 0.125) == pytest.approx(0.65)
    # Photos the rest of the rule already doubts do not count against the variety.
    doubted = confidence >= 0.7
    assert calibrate_variety_threshold(confidence, doubted, right, 0.125) == 0.0
    assert calibrate_variety_threshold(confidence, sure, right, 1.0) == 0.0
    assert calibrate_variety_threshold(np.zeros(0), np.zeros(0), np.zeros(0), 0.05) == 0.0
