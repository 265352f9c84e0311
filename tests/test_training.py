"""The batch job on real photos: train, cache, evaluate, register, roll back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batch.evaluate import run_evaluation
from fruits.cli import main
from fruits.config import Config
from fruits.errors import ConfigError
from fruits.model.registry import ModelRegistry

from .conftest import KNOWN_CLASSES, UNKNOWN_CLASSES, copy_tree

pytestmark = pytest.mark.spark


@pytest.fixture
def dataset(dataset_with_corrupt: Path) -> Path:
    return dataset_with_corrupt


def test_training_learns_real_classes_and_scores_held_out_photos(
    trained: tuple[Config, dict[str, Any]],
) -> None:
    _config, summary = trained
    assert summary["model_version"] == 1
    assert summary["n_classes"] == len(KNOWN_CLASSES)
    assert summary["classifier"] in ("logistic_regression", "decision_tree", "random_forest")
    # 20 held-out Test photos of 4 distinct fruits: at most one mistake.
    assert summary["accuracy_test"] >= 0.95
    assert 1 <= summary["pca_components"] < 2048
    assert summary["explained_variance"] >= 0.95
    assert summary["features_computed"] == 4 * 10 + 4 * 5
    assert summary["features_cached"] == 0


def test_corrupt_photo_is_reported_and_skipped(trained: tuple[Config, dict[str, Any]]) -> None:
    _config, summary = trained
    assert summary["rejected_files"] == 1
    report = Path(summary["report"]).read_text()
    assert "corrupt.jpg" in report and "truncated" in report
    metrics = json.loads((Path(summary["report"]).parent / "metrics.json").read_text())
    assert metrics["rejected_files"][0]["reason"] == "truncated"
    assert metrics["train"]["n_images"] == 4 * 10  # the corrupt one is not among them


def test_report_has_plots_and_per_class_scores(trained: tuple[Config, dict[str, Any]]) -> None:
    _, summary = trained
    folder = Path(summary["report"]).parent
    for name in ("confusion_matrix.png", "pca_variance.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["test"]["per_class"]) == set(KNOWN_CLASSES)
    assert {"features Training", "train", "evaluate"} <= set(metrics["timings"])


def test_second_training_recomputes_no_features(
    trained: tuple[Config, dict[str, Any]], dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, first = trained
    # Through the CLI, to check its contract too: the last stdout line is the JSON summary.
    import os

    env = {"FRUITS_ROOT": config.root, "FRUITS_WEIGHTS": config.featurizer.weights}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        assert main(["train", "--data", str(dataset), "--no-promote"]) == 0
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["features_computed"] == 0
    assert second["features_cached"] == first["features_computed"]
    assert second["model_version"] == 2
    assert second["accuracy_test"] == first["accuracy_test"]
    for key in (
        "model_version",
        "n_classes",
        "pca_components",
        "explained_variance",
        "classifier",
        "accuracy_test",
    ):
        assert key in second
    # --no-promote: version 1 stays current.
    assert ModelRegistry(config.path("models")).current_version() == 1


def test_evaluate_a_folder_mixing_known_and_unknown_classes(
    trained: tuple[Config, dict[str, Any]], tmp_path: Path
) -> None:
    config, _ = trained
    folder = copy_tree(tmp_path / "mixed", "Test", KNOWN_CLASSES[:2], 4)
    copy_tree(folder, "Test", UNKNOWN_CLASSES, 4)
    result = run_evaluation(config, str(folder))
    assert result["n_images"] == 16
    assert result["n_known_class"] == 8 and result["n_unknown_class"] == 8
    assert result["accuracy"] >= 0.875
    assert 0.0 <= result["unknown_rate"] <= 1.0
    assert 0.0 <= result["unknown_recall"] <= 1.0
    assert result["model_version"] == 1


def test_rollback_is_promoting_an_older_version(trained: tuple[Config, dict[str, Any]]) -> None:
    config, _ = trained
    registry = ModelRegistry(config.path("models"))
    versions = registry.versions()
    assert versions[:2] == [1, 2]
    registry.promote(2)
    assert registry.current_version() == 2
    registry.promote(1)  # rollback
    assert registry.current_version() == 1
    entry, model = registry.load()
    assert entry.version == 1 and set(model.classes) == set(KNOWN_CLASSES)
    assert not any(p.name.startswith(".") for p in registry.versions_dir.iterdir())


def test_evaluate_refuses_features_from_other_weights(
    trained: tuple[Config, dict[str, Any]], tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    config, _ = trained
    other_weights = tmp_path / "other.weights.h5"
    other_weights.write_bytes(b"not the same weights")
    other = make_config(Path(config.root), FRUITS_WEIGHTS=str(other_weights))
    folder = copy_tree(tmp_path / "photos", "Test", KNOWN_CLASSES[:1], 1)
    with pytest.raises(ConfigError, match="was trained on"):
        run_evaluation(other, str(folder))
