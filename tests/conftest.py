"""Shared fixtures: real photos and weights from ../shared, one SparkSession per test run."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fruits.config import Config, load_config

PROJECT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FRUITS_SHARED", PROJECT.parent / "shared"))
FRUITS360 = SHARED / "data" / "fruits360"
GROCERY = SHARED / "data" / "grocery"  # real smartphone photos: train and val splits
WEIGHTS = Path(
    os.environ.get("FRUITS_WEIGHTS", SHARED / "models" / "inception_v3_notop.weights.h5")
)

# Visually distinct classes, so a handful of photos per class is enough to learn them.
KNOWN_CLASSES = ("Banana", "Kiwi", "Strawberry", "Pineapple")
UNKNOWN_CLASSES = ("Eggplant", "Cauliflower")
# What the bundle's jobs give conf/databricks.yaml (it refuses to load without them).
DATABRICKS_ENV = {
    "FRUITS_STORAGE_ACCOUNT": "acct",
    "FRUITS_CATALOG": "main",
    "FRUITS_SCHEMA": "fruits",
}


def pytest_configure(config: pytest.Config) -> None:
    missing = [str(p) for p in (FRUITS360, GROCERY, WEIGHTS) if not p.exists()]
    if missing:
        raise pytest.UsageError(
            f"test data not found: {', '.join(missing)} (put the shared folder beside the "
            "project, or set FRUITS_SHARED / FRUITS_WEIGHTS)"
        )


def with_backend(config: Config, backend: str) -> Config:
    """``config`` with another ``featurizer.backend``."""
    featurizer = dataclasses.replace(config.featurizer, backend=backend)
    return dataclasses.replace(config, featurizer=featurizer)


def real_photos(split: str, label: str, n: int, *, skip: int = 0) -> list[Path]:
    """``n`` real photos of one class, evenly spread over its rotation sequence."""
    photos = sorted((FRUITS360 / split / label).glob("*.jpg"))
    step = max(1, len(photos) // (n + skip))
    return photos[skip * step :: step][:n]


def copy_tree(target: Path, split: str, classes: tuple[str, ...], n: int) -> Path:
    for label in classes:
        folder = target / label
        folder.mkdir(parents=True, exist_ok=True)
        for photo in real_photos(split, label, n):
            shutil.copy(photo, folder / photo.name)
    return target


def copy_registry(config: Config, root: Path) -> None:
    """The MLflow store of ``config`` (runs, registry, aliases) copied under ``root``, the
    default store there; the models' files stay in ``config``'s root, where it points."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(config.root) / "mlflow.db", root / "mlflow.db")


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX export folder per run: every root of the run shares one export per size."""
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def make_config(tmp_path_factory: pytest.TempPathFactory, onnx_dir: Path) -> Callable[..., Config]:
    """``make_config(root=None, **env)``: the real conf/local.yaml under a fresh root."""

    def make(root: Path | None = None, **env: str) -> Config:
        root = root or tmp_path_factory.mktemp("root")
        environ = {
            "FRUITS_ROOT": str(root),
            "FRUITS_WEIGHTS": str(WEIGHTS),
            "FRUITS__SPARK__MASTER": "local[2]",
            "FRUITS__FEATURIZER__ONNX_DIR": str(onnx_dir),
            **env,
        }
        return load_config(PROJECT / "conf" / "local.yaml", environ=environ)

    return make


@pytest.fixture(scope="session")
def spark(make_config: Callable[..., Config]):  # type: ignore[no-untyped-def]
    """The one SparkSession of the run (the jobs' getOrCreate returns this same session)."""
    from fruits.spark import get_spark

    session = get_spark(make_config())
    yield session
    session.stop()


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Training/ (10 per class) and Test/ (5 per class) of four real classes."""
    root = tmp_path_factory.mktemp("fruits360-small")
    copy_tree(root / "Training", "Training", KNOWN_CLASSES, 10)
    copy_tree(root / "Test", "Test", KNOWN_CLASSES, 5)
    return root


@pytest.fixture(scope="session")
def dataset_with_corrupt(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small real dataset plus one corrupt (truncated) photo among the Training ones."""
    root = tmp_path_factory.mktemp("with-corrupt")
    shutil.copytree(small_dataset, root, dirs_exist_ok=True)
    good = real_photos("Training", "Banana", 1, skip=3)[0].read_bytes()
    (root / "Training" / "Banana" / "corrupt.jpg").write_bytes(good[: len(good) // 3])
    return root


@pytest.fixture(scope="session")
def trained(
    spark: Any, dataset_with_corrupt: Path, make_config: Callable[..., Config]
) -> tuple[Config, dict[str, Any]]:
    """One real training run for the whole session: (its config, its summary)."""
    from batch.train import run_training

    config = make_config()
    return config, run_training(config, str(dataset_with_corrupt))


DELTA_WRITERS = ("deltars", "spark")


@pytest.fixture(params=DELTA_WRITERS)
def delta_writer(request: pytest.FixtureRequest) -> str:
    """Each Delta writer in turn: the stream's exactly-once contract holds for both."""
    writer: str = request.param
    return writer


@pytest.fixture
def stream_config(
    trained: tuple[Config, dict[str, Any]],
    make_config: Callable[..., Config],
    tmp_path: Path,
    delta_writer: str,
) -> Config:
    """A fresh root whose registry is a copy of the trained one (tests may promote freely),
    written by each Delta writer in turn."""
    source, _ = trained
    copy_registry(source, tmp_path)
    return make_config(
        tmp_path,
        FRUITS__STREAM__TRIGGER_INTERVAL="200 milliseconds",
        FRUITS__SPARK__DELTA_WRITER=delta_writer,
    )


@pytest.fixture
def on_batch() -> Callable[..., None] | None:
    """The hook ``memory_query`` runs after each batch commit; a test module overrides this
    fixture to add one (e.g. the Event Hubs publisher)."""
    return None


@pytest.fixture
def memory_query(  # type: ignore[no-untyped-def]
    spark: Any, stream_config: Config, tmp_path: Path, on_batch: Callable[..., None] | None
):
    """A running prediction query over the memory source: (feed, query, step).

    ``feed.add(rows)`` then ``query.processAllAvailable()`` runs exactly one micro-batch.
    """
    from fruits.console import log
    from fruits.model.serving import ServedModel
    from streaming.job import start_query
    from tests.memory_source import MemoryFeed, register

    register(spark)
    feed = MemoryFeed(tmp_path / "feed")
    source = spark.readStream.format("fruits_memory").option("feed", str(feed.folder)).load()
    query, step = start_query(
        spark,
        stream_config,
        source,
        served=ServedModel(stream_config, log=log),
        once=False,
        checkpoint=str(tmp_path / "checkpoint"),
        on_batch=on_batch,
    )
    try:
        yield feed, query, step
    finally:
        query.stop()


def _azurite_answers() -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen("http://127.0.0.1:10000/devstoreaccount1?comp=list", timeout=2)
    except urllib.error.HTTPError:
        return True  # an HTTP error is an answer: Azurite is up
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def azurite() -> Any:
    """The real Azure Storage emulator: the one already running (``make azurite-start``, as
    ``.ci/run`` does), or started here by the project's own script and stopped afterwards."""
    import subprocess

    started = False
    if not _azurite_answers():
        subprocess.run([str(PROJECT / "scripts" / "azurite.sh"), "start"], check=True)
        started = True
    yield
    if started:
        subprocess.run([str(PROJECT / "scripts" / "azurite.sh"), "stop"], check=True)


@pytest.fixture
def azure_config(
    azurite: Any, trained: tuple[Config, dict[str, Any]], onnx_dir: Path, tmp_path: Path
) -> Config:
    """conf/azurite.yaml under a fresh root, with its own containers (so tests never share a
    landing or a lake) and a copy of the trained registry."""
    import uuid

    source, _ = trained
    copy_registry(source, tmp_path)
    suffix = uuid.uuid4().hex[:12]
    environ = {
        "FRUITS_ROOT": str(tmp_path),
        "FRUITS_WEIGHTS": str(WEIGHTS),
        "FRUITS__SPARK__MASTER": "local[2]",
        "FRUITS__STREAM__TRIGGER_INTERVAL": "200 milliseconds",
        "FRUITS__PATHS__LANDING": f"az://landing-{suffix}/photos",
        "FRUITS__PATHS__LAKE": f"az://lake-{suffix}/fruits",
        "FRUITS__STREAM__QUEUE": f"events-{suffix}",
        "FRUITS__FEATURIZER__ONNX_DIR": str(onnx_dir),
    }
    return load_config(PROJECT / "conf" / "azurite.yaml", environ=environ)


def hadoop_landing(config: Config) -> str:
    """The config's ``az://`` landing as Hadoop's ABFS URL (the same container to the stream)."""
    from fruits.azure import AzureStorage

    return AzureStorage(config.azure).hadoop_url(config.path("landing"))
