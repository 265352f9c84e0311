"""The batch job on real photos: train, cache, evaluate, register, roll back."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from batch.evaluate import run_evaluation
from fruits.cli import main
from fruits.config import Config
from fruits.errors import ConfigError
from fruits.model.registry import ModelRegistry

from .conftest import GROCERY, KNOWN_CLASSES, UNKNOWN_CLASSES, copy_tree

pytestmark = pytest.mark.spark


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
    assert metrics["test"]["n_images"] == 4 * 5
    assert {"features Training", "train", "evaluate"} <= set(metrics["timings"])
    # The reference of drift: the validation answers' shares, in the JSON and the markdown.
    answers = metrics["validation"]["answers"]
    assert answers["n"] == metrics["validation"]["n_images"]
    assert sum(answers["answers"].values()) == pytest.approx(1.0, abs=1e-5)
    assert "## Answers on validation" in Path(summary["report"]).read_text()
    # Both levels: each known class is its own kind here, so the kind is right as often.
    two_level = metrics["test"]["two_level"]
    assert two_level["kind_right"] >= two_level["variety_right"] >= 0.9
    assert summary["kind_accuracy_test"] == two_level["kind_right"]
    assert "## Answers at two levels" in Path(summary["report"]).read_text()


def test_second_training_recomputes_no_features(
    trained: tuple[Config, dict[str, Any]], dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, first = trained
    # Through the CLI, to check its contract too: the last stdout line is the JSON summary.
    env = {"FRUITS_ROOT": config.root, "FRUITS_WEIGHTS": config.featurizer.weights}
    with _environment(env):
        assert main(["train", "--data", str(dataset), "--no-promote"]) == 0
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
    # --no-promote: version 1 stays champion.
    assert ModelRegistry(config).champion() == 1


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
    assert 0.0 <= result["known_rejected"] <= 1.0
    assert 0.0 <= result["unseen_caught"] <= 1.0
    assert result["model_version"] == 1


def test_evaluate_reports_each_dataset_at_both_levels_with_non_produce_photos(
    trained: tuple[Config, dict[str, Any]], small_dataset: Path, tmp_path: Path
) -> None:
    import matplotlib

    from batch.evaluate import NOT_PRODUCE

    config, _ = trained
    unseen = copy_tree(tmp_path / "unseen", "Test", UNKNOWN_CLASSES, 3)
    # Real photos that are not produce: the ones matplotlib ships (a portrait, a parcel).
    samples = Path(matplotlib.get_data_path()) / "sample_data"
    other = tmp_path / "not-produce" / "photos"
    other.mkdir(parents=True)
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
        shutil.copy(samples / name, other / name)
    result = run_evaluation(
        config, [str(small_dataset), str(unseen)], non_produce=str(other.parent)
    )
    per = result["per_dataset"]
    assert set(per) == {"fruits360 Test", "unseen", NOT_PRODUCE}
    studio = per["fruits360 Test"]
    assert studio["n_images"] == 4 * 5 and studio["two_level_known"]["kind_right"] >= 0.9
    assert per["unseen"]["n_unknown_class"] == 6 and "two_level_unseen" in per["unseen"]
    assert per[NOT_PRODUCE]["n_images"] == 2
    assert 0.0 <= per[NOT_PRODUCE]["answered_unknown"] <= 1.0
    assert result["n_images"] == 4 * 5 + 6  # all labelled photos together, not the others
    folder = Path(result["report"])
    for name in ("kind_confusion.png", "mistakes.png", "unknown_curve.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG", name
    # The non-produce photos answered anything but unknown are mistakes, shown first if surest.
    wrong_others = round(per[NOT_PRODUCE]["n_images"] * (1 - per[NOT_PRODUCE]["answered_unknown"]))
    shown = [m for m in result["worst_mistakes"] if m["true_label"] == NOT_PRODUCE]
    assert len(shown) == wrong_others


def test_rollback_is_moving_the_champion_alias_back(
    trained: tuple[Config, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = trained
    registry = ModelRegistry(config)
    assert [v.version for v in registry.versions()][:2] == [1, 2]
    env = {"FRUITS_ROOT": config.root, "FRUITS_WEIGHTS": config.featurizer.weights}
    with _environment(env):
        assert main(["promote", "2"]) == 0
        assert registry.champion() == 2
        assert main(["promote", "1"]) == 0  # rollback
        assert main(["models"]) == 0
        assert main(["promote", "99"]) == 2  # a version that does not exist: one line, exit 2
    out, err = capsys.readouterr()
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert results[0] == {"model_version": 2, "previous_version": 1}
    assert results[1] == {"model_version": 1, "previous_version": 2}
    listing = results[2]
    assert listing["champion"] == 1 and listing["model"] == "fruits"
    first = listing["versions"][0]
    assert first["aliases"] == ["champion"] and first["test"] >= 0.95 and first["run_id"]
    assert "v1" in out and "@champion" in out
    assert "fruits: error: model version 99 does not exist" in err
    files, model = registry.load()
    assert files.version == 1 and set(model.classes) == set(KNOWN_CLASSES)


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


def _grocery_tree(root: Path, classes: dict[str, str], n_train: int, n_val: int) -> Path:
    """A few real Grocery photos per class, in the dataset's own layout (``train|val/...``)."""
    for split, n in (("train", n_train), ("val", n_val)):
        for cls, folder in classes.items():
            target = root / split / folder / cls
            target.mkdir(parents=True)
            for photo in sorted((GROCERY / split).rglob(f"{cls}/*.jpg"))[:n]:
                shutil.copy(photo, target / photo.name)
    return root


def test_one_training_on_two_datasets_merges_their_varieties_through_the_taxonomy(
    small_dataset: Path, make_config: Callable[..., Config], tmp_path: Path
) -> None:
    from batch.train import run_training

    grocery = _grocery_tree(
        tmp_path / "grocery",
        {"Banana": "Fruit", "Granny-Smith": "Fruit/Apple", "Red-Beet": "Vegetables"},
        n_train=6,
        n_val=3,
    )
    config = make_config()
    summary = run_training(config, [str(small_dataset), f"grocery={grocery}"])
    # Grocery's Banana is Fruits-360's Banana; the others take the taxonomy's names.
    assert summary["n_classes"] == len(KNOWN_CLASSES) + 2
    metrics = json.loads((Path(summary["report"]).parent / "metrics.json").read_text())
    assert set(metrics["classes"]) == {*KNOWN_CLASSES, "Apple Granny Smith", "Beetroot"}
    assert metrics["datasets"] == {str(small_dataset): "fruits360", str(grocery): "grocery"}
    assert "grocery: its own val split" in metrics["validation_split"]
    assert summary["features_computed"] == 4 * 10 + 4 * 5 + 3 * (6 + 3)
    # Fruits-360's Test photos are scored; Grocery has no test split here.
    assert metrics["test"]["n_images"] == 4 * 5
    # The refit adds Fruits-360's validation frames, never Grocery's val (what evaluate
    # measures Grocery on): the detector's references are the refit's photos.
    refit = ModelRegistry(config).files().detector()
    assert refit is not None and len(refit.references) == 4 * 10 + 3 * 6
    # A variety threshold calibrated per domain, one per class in the model.
    assert set(metrics["validation"]["variety_thresholds"]) == {"fruits360", "grocery"}
    meta = ModelRegistry(config).files().meta
    assert len(meta["variety_thresholds"]) == len(meta["classes"])
    scorer = ModelRegistry(config).files().scorer()  # what the stream and the pyfunc answer with
    assert scorer is not None and scorer.rule.variety_thresholds == tuple(
        meta["variety_thresholds"]
    )


def test_a_dataset_s_own_validation_split_is_kept_and_the_rest_is_split_by_video(
    spark: Any,
) -> None:
    from fruits.model.classifier import _block_split

    rows = [(f"file:/g/train/Kiwi/{i}.jpg", "Kiwi", False, [0.0]) for i in range(5)]
    rows += [(f"file:/g/val/Kiwi/{i}.jpg", "Kiwi", True, [0.0]) for i in range(2)]
    rows += [(f"file:/f/Training/Kiwi/r_{i}_100.jpg", "Kiwi", None, [0.0]) for i in range(20)]
    data = spark.createDataFrame(
        rows, "path string, label string, held_out boolean, f array<double>"
    )
    training, validation = _block_split(data, 0.2, seed=1)
    assert "held_out" not in training.columns and "_own_split" not in training.columns
    held = {r.path for r in validation.collect()}
    # The refit leaves a dataset's own validation split out (it is what evaluate measures).
    own = {r.path for r in validation.where("_own_split").collect()}
    assert own == {f"file:/g/val/Kiwi/{i}.jpg" for i in range(2)}
    fitted = {r.path for r in training.collect()}
    assert {p for p in held if "/g/" in p} == {f"file:/g/val/Kiwi/{i}.jpg" for i in range(2)}
    assert {p for p in fitted if "/g/" in p} == {f"file:/g/train/Kiwi/{i}.jpg" for i in range(5)}
    studio_held = [p for p in held if "/f/" in p]
    assert 1 <= len(studio_held) < 20 and len(fitted) + len(held) == 27


def test_synthetic_phone_photos_of_the_studio_photos_follow_their_photo_s_side_of_the_split(
    trained: tuple[Config, dict[str, Any]],
    small_dataset: Path,
    make_config: Callable[..., Config],
    tmp_path: Path,
) -> None:
    from batch.train import run_training
    from fruits.augment import VERSION
    from fruits.sinks.delta import open_lake
    from fruits.sinks.tables import FEATURES

    _, plain = trained  # the same 40 usable Training photos, without copies
    config = make_config(tmp_path, FRUITS__TRAINING__AUGMENTATIONS="1")
    summary = run_training(config, str(small_dataset))
    n_photos = len(KNOWN_CLASSES) * 10
    assert summary["augmented_photos"] == n_photos
    # Each copy on its photo's side: a validation photo's copy validates, never trains.
    assert summary["n_validation"] == 2 * plain["n_validation"]
    assert summary["n_train"] == 2 * plain["n_train"]
    assert summary["accuracy_test"] >= 0.9
    rows = open_lake(config).read_arrow(FEATURES, columns=["extractor", "image_id", "path"])
    extractors = rows.column("extractor").to_pylist()
    copies = [i for i, e in enumerate(extractors) if e.endswith(f"/augmented-v{VERSION}-1")]
    originals = [i for i, e in enumerate(extractors) if "/augmented-" not in e]
    assert len(copies) == n_photos  # cached per photo and copy, under the photo's own id
    ids = rows.column("image_id").to_pylist()
    assert {ids[i] for i in copies} <= {ids[i] for i in originals}
