from __future__ import annotations

import pytest

from fruits.model.metrics import (
    classification_report,
    cumulative_components,
    open_set_report,
    two_level_report,
    unknown_threshold,
)


def test_fewest_components_reaching_the_target() -> None:
    assert cumulative_components([0.5, 0.3, 0.15, 0.05], 0.95) == 3
    assert cumulative_components([0.5, 0.3, 0.15, 0.05], 0.5) == 1
    assert cumulative_components([0.5, 0.5], 1.0) == 2


def test_threshold_rejects_at_most_the_configured_share() -> None:
    probs = [0.3, 0.5, 0.9, 0.91, 0.95, 0.97, 0.98, 0.99, 0.99, 0.995]
    threshold = unknown_threshold(probs, 0.2)
    rejected = [p for p in probs if p < threshold]
    assert len(rejected) == 2
    assert unknown_threshold(probs, 0.0) == 0.3  # nothing below the lowest
    assert sum(p < unknown_threshold(probs, 0.05) for p in probs) == 0


def test_classification_report_counts() -> None:
    report = classification_report(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert report["accuracy"] == 0.75
    assert report["confusion_matrix"] == [[1, 1], [0, 2]]
    assert report["per_class"]["a"]["recall"] == 0.5
    assert report["per_class"]["b"]["precision"] == round(2 / 3, 4)


def test_open_set_report_separates_known_and_unknown_classes() -> None:
    report = open_set_report(
        true=["a", "b", "z", "z"],
        predicted=["a", "a", "a", "b"],
        is_unknown=[False, True, True, False],
        known_classes=["a", "b"],
    )
    assert report["accuracy"] == 0.5
    assert report["known_rejected"] == 0.5
    assert report["unseen_caught"] == 0.5
    assert (report["n_known_class"], report["n_unknown_class"]) == (2, 2)


def test_variance_shares_match_pca_of_standardised_data() -> None:
    import numpy as np

    from fruits.model.metrics import standardized_variance_shares

    rng = np.random.default_rng(0)
    data = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))
    data = np.hstack([data, np.ones((50, 1))])  # a constant feature, as dead ReLUs give
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.corrcoef(data, rowvar=False)
    np.fill_diagonal(correlation, 1.0)  # as Spark's Correlation reports it
    shares = standardized_variance_shares(correlation, data.std(0) == 0)
    standardised = (data[:, :6] - data[:, :6].mean(0)) / data[:, :6].std(0, ddof=1)
    singular = np.linalg.svd(standardised, compute_uv=False) ** 2
    assert np.allclose(shares[:6], singular / singular.sum())
    assert shares[6] == 0.0 and abs(shares.sum() - 1.0) < 1e-12


def test_two_level_answers_fall_in_exactly_one_outcome() -> None:
    report = two_level_report(
        true_kinds=["apple", "apple", "apple", "tomato", "tomato"],
        true_labels=["Apple Braeburn", "Apple Braeburn", "Apple Braeburn", "Tomato 1", "Tomato 1"],
        kinds=["apple", "apple", "apple", "apple", "tomato"],
        labels=["Apple Braeburn", "Apple Fuji", "Apple Fuji", "Apple Fuji", "Tomato 2"],
        is_unknown=[False, False, False, False, True],
        variety_not_sure=[False, True, False, False, False],
    )
    assert report["n_images"] == 5
    assert report["variety_right"] == pytest.approx(0.2)
    assert report["kind_right_variety_not_sure"] == pytest.approx(0.2)
    assert report["kind_right"] == pytest.approx(0.6)  # the third: right kind, wrong variety
    assert report["answered_unknown"] == pytest.approx(0.2)
    # A wrong variety given as sure, and a wrong kind.
    assert report["confidently_wrong"] == pytest.approx(0.4)
    assert report["unknown_or_right_kind"] == pytest.approx(0.4)
    assert two_level_report([], [], [], [], [], []) == {"n_images": 0}
