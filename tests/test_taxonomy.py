"""The taxonomy: every class of both datasets is a variety of a kind, in plain English."""

from __future__ import annotations

from pathlib import Path

import pytest

from fruits.errors import ConfigError
from fruits.model.taxonomy import default_taxonomy, read_taxonomy

from .conftest import FRUITS360, GROCERY


def _classes(root: Path) -> set[str]:
    return {p.parent.name for p in root.rglob("*.jpg")}


def test_every_shared_class_is_named_by_the_taxonomy() -> None:
    taxonomy = default_taxonomy()
    named = {dataset: set() for dataset in ("fruits360", "grocery")}  # type: dict[str, set[str]]
    for dataset, name in taxonomy.varieties:
        named[dataset].add(name)
    assert _classes(FRUITS360 / "Training") <= named["fruits360"]
    assert _classes(GROCERY / "train") | _classes(GROCERY / "val") <= named["grocery"]


def test_the_same_variety_in_both_datasets_is_one_class_and_kinds_are_plain_english() -> None:
    taxonomy = default_taxonomy()
    assert taxonomy.variety("grocery", "Granny-Smith") == "Apple Granny Smith"
    assert taxonomy.variety("fruits360", "Apple Granny Smith") == "Apple Granny Smith"
    assert taxonomy.variety("grocery", "Aubergine") == taxonomy.variety("fruits360", "Eggplant")
    # Only maybe the same: two varieties of one kind.
    assert taxonomy.variety("grocery", "Golden-Delicious") != "Apple Golden 1"
    assert taxonomy.kind("Golden-Delicious") == taxonomy.kind("Apple Golden 1") == "apple"
    assert taxonomy.kind("Vine-Tomato") == taxonomy.kind("Tomato 1") == "tomato"
    kinds = set(taxonomy.kinds.values())
    assert all(k == k.lower() and k.replace(" ", "").isalpha() for k in kinds), kinds


def test_a_class_the_taxonomy_does_not_name_is_its_own_variety_of_its_first_word() -> None:
    taxonomy = default_taxonomy()
    assert taxonomy.variety("grocery", "Quince Giant") == "Quince Giant"
    assert taxonomy.kind("Quince Giant") == "quince"
    assert taxonomy.kind("Blood-Orange") == "blood"
    assert taxonomy.kinds_of(["Quince Giant", "Banana"]) == {
        "Quince Giant": "quince",
        "Banana": "banana",
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("dataset,class,kind\n", "header"),
        ("dataset,class,variety,kind\ngrocery,A,A\n", "line 2: 4 non-empty cells"),
        ("dataset,class,variety,kind\ngrocery,A,A,apple\ngrocery,A,B,apple\n", "named twice"),
        ("dataset,class,variety,kind\ngrocery,A,V,apple\nfruits360,B,V,pear\n", "is a 'apple'"),
    ],
)
def test_a_broken_taxonomy_is_a_clear_error_naming_the_line(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        read_taxonomy(text.splitlines(), source="t.csv")


def test_a_folder_of_no_known_dataset_takes_the_first_dataset_naming_its_class() -> None:
    taxonomy = default_taxonomy()
    assert taxonomy.variety(None, "Granny-Smith") == "Apple Granny Smith"
    assert taxonomy.variety(None, "Apple Braeburn") == "Apple Braeburn"
    assert taxonomy.variety(None, "Dragon Fruit") == "Dragon Fruit"
