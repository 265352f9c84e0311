"""Labelled datasets: the layout told from the folders, each with its own validation split."""

from __future__ import annotations

from pathlib import Path

import pytest

from fruits.errors import DataError
from fruits.sources.datasets import labelled_dataset, labelled_datasets


def _tree(root: Path, *folders: str) -> Path:
    for folder in folders:
        (root / folder).mkdir(parents=True)
    return root


def test_a_fruits360_folder_trains_on_training_split_by_video_and_scores_its_test(
    tmp_path: Path,
) -> None:
    root = _tree(tmp_path / "f360", "Training/Banana", "Test/Banana")
    dataset = labelled_dataset(str(root) + "/")
    assert (dataset.layout, dataset.root) == ("fruits360", str(root))
    assert [(s.name, s.location, s.held_out) for s in dataset.training] == [
        ("Training", f"{root}/Training", None)
    ]
    assert dataset.test is not None and dataset.test.location == f"{root}/Test"
    assert labelled_dataset(str(_tree(tmp_path / "no-test", "Training/Kiwi"))).test is None


def test_a_grocery_folder_validates_on_its_own_val_split_and_has_no_test(tmp_path: Path) -> None:
    root = _tree(tmp_path / "grocery", "train/Fruit/Apple/Granny-Smith", "val/Fruit/Banana")
    dataset = labelled_dataset(str(root))
    assert dataset.layout == "grocery"
    assert [(s.name, s.held_out) for s in dataset.training] == [("train", False), ("val", True)]
    # Its test split is for judging the system: never read, even when it is there.
    (root / "test").mkdir()
    assert labelled_dataset(str(root)).test is None


def test_several_datasets_comma_separated_or_repeated_and_layouts_given_for_urls(
    tmp_path: Path,
) -> None:
    f360 = _tree(tmp_path / "a", "Training/Banana")
    grocery = _tree(tmp_path / "b", "train/Fruit/Kiwi", "val/Fruit/Kiwi")
    both = labelled_datasets(f"{f360}, {grocery}")
    assert [d.layout for d in both] == ["fruits360", "grocery"]
    assert labelled_datasets([str(f360), str(grocery)]) == both
    remote = labelled_datasets("grocery=abfss://c@acct.dfs.core.windows.net/grocery,az://t/f360")
    assert [(d.layout, d.root) for d in remote] == [
        ("grocery", "abfss://c@acct.dfs.core.windows.net/grocery"),
        ("fruits360", "az://t/f360"),
    ]


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("{tmp}/missing", "not found"),
        ("{tmp}/neither", "neither a Fruits-360 folder"),
        ("coco={tmp}/neither", "unknown dataset layout 'coco'"),
        ("{tmp},{tmp}/", "named twice"),
        (" , ", "no dataset"),
    ],
)
def test_a_folder_of_no_known_layout_is_a_clear_error(
    tmp_path: Path, spec: str, error: str
) -> None:
    _tree(tmp_path / "neither", "photos")
    _tree(tmp_path, "Training/Banana")
    with pytest.raises(DataError, match=error):
        labelled_datasets(spec.format(tmp=tmp_path))


def test_evaluate_scores_a_dataset_s_held_out_photos_or_a_plain_class_folder(
    tmp_path: Path,
) -> None:
    from fruits.sources.datasets import evaluation_sets

    f360 = _tree(tmp_path / "f360", "Training/Banana", "Test/Banana")
    grocery = _tree(tmp_path / "grocery", "train/Fruit/Kiwi", "val/Fruit/Kiwi")
    plain = _tree(tmp_path / "phone", "Kiwi")
    sets = evaluation_sets([str(f360), f"{grocery},{plain}"])
    assert [(s.name, s.location, s.layout) for s in sets] == [
        ("fruits360 Test", f"{f360}/Test", "fruits360"),
        ("grocery val", f"{grocery}/val", "grocery"),
        ("phone", str(plain), None),
    ]
    with pytest.raises(DataError, match="no Test/ folder"):
        evaluation_sets(str(_tree(tmp_path / "no-test", "Training/Kiwi")))
