"""The answer at two levels: a kind is known when its varieties together are sure enough."""

from __future__ import annotations

import numpy as np
import pytest

from fruits.model.answers import ANSWER_COLUMNS, AnswerRule, kinds_of

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
