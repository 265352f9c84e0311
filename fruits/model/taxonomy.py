"""One taxonomy for every labelled dataset: each class is a variety of a kind.

``taxonomy.csv`` (beside this module) maps each dataset's class names onto one variety and its
kind, in plain English (``grocery,Granny-Smith,Apple Granny Smith,apple``). The same variety in
two datasets is one class where it clearly is the same fruit (Granny Smith, Kaiser pears,
aubergines); a studio variety and a shop's kind that only may be the same (Fruits-360's
``Apple Golden 1`` and Grocery's ``Golden-Delicious``) stay two varieties of one kind, so a
photo of either is still answered with the right kind.

A class the file does not name (another dataset, a class added to a folder) is a variety of its
own name, whose kind is the first word of that name in lower case (``Quince Giant`` ->
``quince``): training never fails on a new folder, and the file says how to name it properly.

Pure Python: no Spark; unit-tested in tests/test_taxonomy.py.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from fruits.errors import ConfigError

__all__ = ["Taxonomy", "default_taxonomy", "read_taxonomy"]

COLUMNS = ("dataset", "class", "variety", "kind")


@dataclass(frozen=True)
class Taxonomy:
    """(dataset, class name) -> variety, and variety -> kind."""

    varieties: dict[tuple[str, str], str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    def variety(self, dataset: str | None, name: str) -> str:
        """The variety a dataset's class is (its own name when the taxonomy does not say);
        ``dataset`` None (a folder of no known dataset): the first dataset naming the class."""
        if dataset is not None:
            return self.varieties.get((dataset, name), name)
        return next((v for (_, c), v in sorted(self.varieties.items()) if c == name), name)

    def kind(self, variety: str) -> str:
        """The kind of a variety (the first word of its name when the taxonomy does not say)."""
        known = self.kinds.get(variety)
        if known is not None:
            return known
        words = variety.replace("-", " ").split()
        return words[0].lower() if words else variety

    def kinds_of(self, varieties: Iterable[str]) -> dict[str, str]:
        return {v: self.kind(v) for v in varieties}


def read_taxonomy(lines: Iterable[str], source: str = "taxonomy") -> Taxonomy:
    """A taxonomy from CSV lines with the header ``dataset,class,variety,kind``.

    A class named twice, or a variety given two kinds, is an error naming the line: the
    taxonomy is the one place that decides what a class is."""
    reader = csv.reader(lines)
    header = tuple(h.strip() for h in next(reader, ()))
    if header != COLUMNS:
        raise ConfigError(f"{source}: the header must be {','.join(COLUMNS)}, not {header}")
    varieties: dict[tuple[str, str], str] = {}
    kinds: dict[str, str] = {}
    for number, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(COLUMNS) or not all(cell.strip() for cell in row):
            raise ConfigError(f"{source}, line {number}: 4 non-empty cells expected, got {row}")
        dataset, name, variety, kind = (cell.strip() for cell in row)
        if (dataset, name) in varieties:
            raise ConfigError(f"{source}, line {number}: {dataset} class {name!r} named twice")
        if kinds.get(variety, kind) != kind:
            raise ConfigError(
                f"{source}, line {number}: variety {variety!r} is a {kinds[variety]!r}, "
                f"not a {kind!r}"
            )
        varieties[(dataset, name)] = variety
        kinds[variety] = kind
    return Taxonomy(varieties, kinds)


@lru_cache(maxsize=1)
def default_taxonomy() -> Taxonomy:
    """The package's taxonomy (Fruits-360 and the Grocery Store Dataset)."""
    text = resources.files("fruits.model").joinpath("taxonomy.csv").read_text(encoding="utf-8")
    return read_taxonomy(text.splitlines(), source="fruits/model/taxonomy.csv")
