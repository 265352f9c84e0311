"""Drift: the training report stores its validation answers; live answers are compared with them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from fruits.config import Config
from fruits.model.registry import ModelRegistry
from fruits.observe.drift import (
    UNKNOWN,
    AnswerDistribution,
    answer_distribution,
    compare,
    measure_drift,
    total_variation,
)
from fruits.sinks.delta import open_lake
from fruits.sinks.tables import PREDICTIONS, SCHEMAS
from tests.conftest import copy_registry


def test_answer_distribution_counts_unknown_as_an_answer_and_bins_confidence() -> None:
    got = answer_distribution(
        ["Apple", "Apple", "Banana", "Banana"], [0.95, 1.0, 0.05, 0.55], [False, False, False, True]
    )
    assert got.n == 4
    assert got.answers == {"Apple": 0.5, "Banana": 0.25, UNKNOWN: 0.25}
    assert got.unknown_share == 0.25
    # 0.05 -> bin 0, 0.55 -> bin 5, 0.95 and exactly 1.0 -> the closed top bin.
    assert got.confidence == [0.25, 0, 0, 0, 0, 0.25, 0, 0, 0, 0.5]
    assert AnswerDistribution.from_dict(got.as_dict()) == got


def test_total_variation_is_half_the_l1_distance() -> None:
    assert total_variation({"a": 1.0}, {"a": 1.0}) == 0.0
    assert total_variation({"a": 1.0}, {"b": 1.0}) == 1.0
    assert total_variation({"a": 0.5, "b": 0.5}, {"a": 1.0}) == 0.5
    assert total_variation([0.2, 0.8], [0.6, 0.4]) == pytest.approx(0.4)
    same = answer_distribution(["x"] * 3, [0.9] * 3, [False] * 3)
    drift = compare(same, answer_distribution(["x"] * 2, [0.15] * 2, [True] * 2))
    assert drift.confidence == 1.0 and drift.answers == 1.0


def _predictions(version: int, answers: list[tuple[str, float, bool]], at: dt.datetime) -> pa.Table:
    rows = [
        {
            "image_id": f"id{i}",
            "path": f"file:///landing/{i}.jpg",
            "label": label,
            "confidence": confidence,
            "top_k": [{"label": label, "prob": confidence}],
            "is_unknown": unknown,
            "model_version": version,
            "uploaded_at": at,
            "discovered_at": at,
            "predicted_at": at,
            "latency_ms": 100.0,
            "batch_id": 0,
        }
        for i, (label, confidence, unknown) in enumerate(answers)
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMAS[PREDICTIONS])


def test_live_answers_like_validation_do_not_drift_unsure_ones_do(
    trained: tuple[Config, dict[str, Any]], make_config: Callable[..., Config], tmp_path: Path
) -> None:
    source, summary = trained
    version = summary["model_version"]
    copy_registry(source, tmp_path)
    config = make_config(tmp_path)
    # The report of the real training holds the calibrated model's answers on validation.
    report = ModelRegistry(config).training_report(version)
    assert report is not None
    reference = AnswerDistribution.from_dict(report["validation"]["answers"])
    assert reference.n == report["validation"]["n_images"] > 0
    assert sum(reference.confidence) == pytest.approx(1.0, abs=1e-5)
    assert set(reference.answers) - {UNKNOWN} <= set(report["classes"])
    assert reference.unknown_share == pytest.approx(
        report["validation"]["known_rejected"], abs=1e-5
    )

    now = dt.datetime.now(dt.UTC)
    lake = open_lake(config)
    # An hour ago, answers distributed as on validation; then a model facing what it does not know.
    like_validation = [
        (label, (b + 0.5) / 10, label == UNKNOWN)
        for label, share in reference.answers.items()
        for b, bin_share in enumerate(reference.confidence)
        for _ in range(round(share * bin_share * 400))
    ]
    lake.append_arrow(
        _predictions(version, like_validation, now - dt.timedelta(minutes=90)), PREDICTIONS
    )
    calm = measure_drift(config, window=dt.timedelta(hours=2), now=now)
    assert calm is not None and calm.model_version == version
    assert calm.live.n == len(like_validation)
    assert calm.confidence < 0.2

    unsure = [("Banana", 0.3, True)] * 60 + [("Banana", 0.45, False)] * 40
    lake.append_arrow(_predictions(version, unsure, now - dt.timedelta(minutes=10)), PREDICTIONS)
    drifted = measure_drift(config, window=dt.timedelta(hours=1), now=now)
    assert drifted is not None
    assert drifted.live.n == 100  # the last hour only, not the rows of 90 minutes ago
    assert drifted.live.unknown_share == 0.6
    assert drifted.confidence > 0.8 and drifted.answers > 0.5
    # No answers in the window, or a version without a stored reference: nothing to compare.
    assert (
        measure_drift(config, window=dt.timedelta(hours=1), now=now + dt.timedelta(hours=3)) is None
    )
    lake.append_arrow(_predictions(version + 100, unsure, now), PREDICTIONS)
    assert measure_drift(config, window=dt.timedelta(minutes=5), now=now) is None
