"""Labelled datasets, by layout: where a dataset's training, validation and test photos are.

Two layouts are known, each with its own honest validation split:

* ``fruits360``: ``Training/<Class>/*.jpg`` and ``Test/<Class>/*.jpg``. Its validation is held
  out of Training by video (fruits/model/splits.py): neighbouring frames are nearly the same
  photo.
* ``grocery``: ``train|val/<Fruit|Vegetables>/<Kind>/[<Variety>/]*.jpg`` with ``classes.csv``
  (the Grocery Store Dataset). Its class is the folder holding the photo; its ``val`` split is
  the validation. Its ``test`` split is not read: a dataset's test photos are for judging a
  system, not for choosing one.

``--data`` names a dataset by its root (the layout is told from the folders) or as
``layout=location`` (a URL, whose folders are not listed from the driver: the layout must be
said, and ``fruits360`` is assumed when it is not). Several datasets are separated by commas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fruits.config import is_url
from fruits.errors import DataError

__all__ = [
    "LAYOUTS",
    "EvaluationSet",
    "LabelledDataset",
    "Split",
    "evaluation_sets",
    "labelled_dataset",
    "labelled_datasets",
]

LAYOUTS = ("fruits360", "grocery")


@dataclass(frozen=True)
class Split:
    """One folder of a dataset's photos and the part it plays."""

    name: str  # as the feature store records it: Training, Test, train, val
    location: str
    held_out: bool | None  # True: validation; False: training; None: held out by video


@dataclass(frozen=True)
class LabelledDataset:
    layout: str
    root: str
    training: tuple[Split, ...]  # what fits and validates the model
    test: Split | None  # scored after training, never fitted on

    @property
    def name(self) -> str:
        return self.layout

    @property
    def is_studio(self) -> bool:
        """Photos of one fruit on a white background (its mask), which augmentation re-frames
        (fruits/augment.py)."""
        return self.layout == "fruits360"


def labelled_dataset(spec: str) -> LabelledDataset:
    """The dataset ``[layout=]root`` names; a clear error for a folder of neither layout."""
    layout, _, root = spec.rpartition("=") if "=" in spec.split("://")[0] else ("", "", spec)
    root = root.rstrip("/")
    if layout and layout not in LAYOUTS:
        raise DataError(f"unknown dataset layout {layout!r} in {spec!r} (one of {LAYOUTS})")
    if not layout:
        layout = "fruits360" if is_url(root) else _layout_of(Path(root))
    if layout == "grocery":
        return LabelledDataset(
            layout,
            root,
            (Split("train", f"{root}/train", False), Split("val", f"{root}/val", True)),
            None,
        )
    test = f"{root}/Test"
    has_test = is_url(root) or Path(test).is_dir()
    return LabelledDataset(
        layout,
        root,
        (Split("Training", f"{root}/Training", None),),
        Split("Test", test, None) if has_test else None,
    )


def labelled_datasets(data: str | Sequence[str]) -> list[LabelledDataset]:
    """The datasets of ``--data`` values or ``training.data`` (comma-separated)."""
    specs = data.split(",") if isinstance(data, str) else [s for d in data for s in d.split(",")]
    specs = [s.strip() for s in specs if s.strip()]
    if not specs:
        raise DataError("no dataset named")
    datasets = [labelled_dataset(s) for s in specs]
    roots = [d.root for d in datasets]
    if len(set(roots)) != len(roots):
        raise DataError(f"a dataset is named twice: {', '.join(roots)}")
    return datasets


@dataclass(frozen=True)
class EvaluationSet:
    """Photos ``fruits evaluate`` scores: a dataset's held-out split, or a ``<Class>/`` folder."""

    name: str  # "fruits360 Test", "grocery val", or the folder's name
    location: str
    layout: str | None  # whose class names these are (the taxonomy's); None: any dataset's


def evaluation_sets(data: str | Sequence[str]) -> list[EvaluationSet]:
    """What to score for ``--data`` values: a dataset root gives its held-out photos
    (Fruits-360's ``Test``, Grocery's ``val``), any other folder its ``<Class>/`` photos."""
    specs = data.split(",") if isinstance(data, str) else [s for d in data for s in d.split(",")]
    sets = []
    for spec in (s.strip() for s in specs if s.strip()):
        explicit = "=" in spec.split("://")[0]
        local = not explicit and not is_url(spec)
        if not explicit and not (local and _is_dataset(Path(spec))):
            location = spec.rstrip("/")
            sets.append(EvaluationSet(location.rsplit("/", 1)[-1], location, None))
            continue
        dataset = labelled_dataset(spec)
        if dataset.layout == "grocery":
            held_out = next(s for s in dataset.training if s.held_out)
        elif dataset.test is not None:
            held_out = dataset.test
        else:
            raise DataError(f"{dataset.root} has no Test/ folder to evaluate on")
        sets.append(
            EvaluationSet(f"{dataset.layout} {held_out.name}", held_out.location, dataset.layout)
        )
    if not sets:
        raise DataError("no folder to evaluate named")
    return sets


def _is_dataset(root: Path) -> bool:
    return (root / "Training").is_dir() or ((root / "train").is_dir() and (root / "val").is_dir())


def _layout_of(root: Path) -> str:
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    if (root / "Training").is_dir():
        return "fruits360"
    if (root / "train").is_dir() and (root / "val").is_dir():
        return "grocery"
    raise DataError(
        f"{root} is neither a Fruits-360 folder (Training/<Class>/, Test/<Class>/) nor a "
        "Grocery Store Dataset folder (train/ and val/ with classes.csv)"
    )
