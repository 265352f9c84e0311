"""Model faults on a real registry and a real stream: a champion that does not load at start
(corrupt, missing), none that loads, a failed version retried later, and a version's files
downloaded through ``models:/`` like Unity Catalog's."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

from fruits.config import Config
from fruits.errors import RegistryError
from fruits.features.featurizer import ExtractorSpec
from fruits.model.registry import ARTIFACT_KEY, CHAMPION, ModelRegistry
from fruits.model.serving import ServedModel
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.tables import PREDICTIONS
from streaming.job import run_stream

from .conftest import copy_registry, real_photos

pytestmark = pytest.mark.spark


@pytest.fixture
def delta_writer() -> str:
    """One Delta writer: what is tested here is which model serves, not how rows are written."""
    return "deltars"


def _store(registry: ModelRegistry, version: int) -> Path:
    """The version's ``fruits`` artifact folder in the (local) artifact store itself."""
    uri = registry.client.get_model_version_download_uri(registry.name, str(version))
    return Path(unquote(urlparse(uri).path)) / "artifacts" / ARTIFACT_KEY


def _second_version(config: Config) -> tuple[ModelRegistry, int]:
    """Version 1 registered again, as a new version with files of its own (a retraining of
    the same data gives the same model, minutes later)."""
    registry = ModelRegistry(config)
    files, model = registry.load(1)
    return registry, registry.register(model, ExtractorSpec.for_model(config, files.meta)).version


def _corrupt(path: Path) -> bytes:
    """Truncate a file to half its size (a torn upload); returns its good bytes."""
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    return good


def _drop_photo(config: Config, label: str) -> str:
    landing = Path(config.path("landing"))
    landing.mkdir(parents=True, exist_ok=True)
    photo = real_photos("Test", label, 1, skip=2)[0]
    shutil.copy(photo, landing / photo.name)
    return photo.name


def _predicted(config: Config) -> list[tuple[str, str, int]]:
    rows = DeltaRsLake(config.path("lake")).read_arrow(PREDICTIONS).to_pylist()
    return [(r["path"].rsplit("/", 1)[-1], r["label"], r["model_version"]) for r in rows]


def test_a_corrupt_champion_at_start_serves_the_previous_version(
    spark: Any, stream_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    registry, second = _second_version(stream_config)
    _corrupt(_store(registry, second) / "scorer.npz")
    registry.promote(second)
    name = _drop_photo(stream_config, "Kiwi")
    capsys.readouterr()

    result = run_stream(stream_config, once=True)  # `fruits stream --once`

    logged = capsys.readouterr().err.splitlines()
    assert result["model_version"] == 1
    assert _predicted(stream_config) == [(name, "Kiwi", 1)]
    # One clear line names version 2 and why (numpy's own error, not a FruitsError)...
    failures = [line for line in logged if f"model version {second} " in line]
    assert len(failures) == 1, logged
    assert "('champion') does not load: BadZipFile" in failures[0]
    # ...and one says what serves instead.
    assert any(
        f"serving model version 1, the newest older version that loads, until version {second}"
        in line
        for line in logged
    ), logged


def test_a_champion_that_failed_is_tried_again_later_and_then_served(
    spark: Any,
    trained: tuple[Config, dict[str, Any]],
    make_config: Callable[..., Config],
    tmp_path: Path,
) -> None:
    copy_registry(trained[0], tmp_path)
    config = make_config(tmp_path, FRUITS__MLFLOW__RETRY_INTERVAL_S="1.5")
    registry, second = _second_version(config)
    store = _store(registry, second)
    away = store.with_name("elsewhere")
    store.rename(away)  # the store does not answer for its files: a failed download
    registry.promote(second)
    lines: list[str] = []
    served = ServedModel(config, log=lines.append)

    assert served.refresh().version == 1  # at start: the previous version
    assert served.refresh().version == 1  # within the interval: not tried, nor logged, again
    assert len([line for line in lines if f"model version {second} " in line]) == 1, lines

    away.rename(store)  # the store answers again
    time.sleep(1.6)
    assert served.refresh().version == second  # tried again after the interval: it loads
    assert lines[-1] == f"model hot-swap: v1 -> v{second}"


def test_with_no_version_that_loads_the_stream_waits_and_retries_then_serves(
    spark: Any,
    trained: tuple[Config, dict[str, Any]],
    make_config: Callable[..., Config],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The long-running job (not --once): none loads, so it waits, retrying; the process stays
    up, and serves as soon as the champion loads."""
    copy_registry(trained[0], tmp_path)
    config = make_config(
        tmp_path,
        FRUITS__MLFLOW__RETRY_INTERVAL_S="1",
        FRUITS__MLFLOW__MODEL_NAME="broken",
        FRUITS__STREAM__TRIGGER_INTERVAL="200 milliseconds",
    )
    # A registered model whose only version is a copy of the trained one, made corrupt.
    registry = ModelRegistry(config)
    model_folder = tmp_path / "broken-model"
    shutil.copytree(_store(ModelRegistry(trained[0]), 1).parents[1], model_folder)
    scorer = model_folder / "artifacts" / ARTIFACT_KEY / "scorer.npz"
    good = _corrupt(scorer)
    registry.client.create_registered_model("broken")
    version = registry.client.create_model_version("broken", source=model_folder.as_uri())
    registry.client.set_registered_model_alias("broken", CHAMPION, version.version)
    name = _drop_photo(config, "Banana")

    running = threading.Event()
    stopped = threading.Event()

    def repair_then_stop() -> None:
        time.sleep(4)  # a few failed attempts, one a second
        scorer.write_bytes(good)
        deadline = time.monotonic() + 180
        while not stopped.is_set() and time.monotonic() < deadline:
            try:
                if DeltaRsLake(config.path("lake")).read_arrow(PREDICTIONS).num_rows:
                    running.set()
                    break
            except Exception:  # the table is created by the first batch
                pass
            time.sleep(0.3)
        if not stopped.is_set():
            os.kill(os.getpid(), signal.SIGTERM)  # the stream's own handler stops the query

    def too_long(*_: object) -> None:
        raise TimeoutError("the stream did not serve once the champion loaded")

    # Until the stream installs its handler (after the model), SIGTERM would end pytest.
    previous = signal.signal(signal.SIGTERM, too_long)
    helper = threading.Thread(target=repair_then_stop, daemon=True)
    helper.start()
    capsys.readouterr()
    try:
        result = run_stream(config, once=False)
    finally:
        stopped.set()
        helper.join()
        signal.signal(signal.SIGTERM, previous)

    logged = capsys.readouterr().err.splitlines()
    assert running.is_set()
    assert result["model_version"] == 1
    assert _predicted(config) == [(name, "Banana", 1)]
    retries = [line for line in logged if "no model to serve: " in line]
    assert len(retries) >= 2, logged
    assert all(line.endswith("trying again in 1 s") for line in retries), retries
    assert "no version of model 'broken'" in retries[0] and "loads" in retries[0]
    failures = [line for line in logged if "model version 1 ('champion') does not load" in line]
    assert len(failures) == len(retries), logged  # each attempt tried the champion again


def test_a_versions_files_are_downloaded_through_a_models_uri(
    trained: tuple[Config, dict[str, Any]], make_config: Callable[..., Config], tmp_path: Path
) -> None:
    """The download Unity Catalog needs (``models:/``: it hands out the storage credentials),
    on the local registry: the same code path, into a folder of this process."""
    import mlflow

    copy_registry(trained[0], tmp_path)
    config = make_config(tmp_path)
    registry = ModelRegistry(config)
    # The process' MLflow pointing at another store must not matter.
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'another.db'}")
    store = _store(registry, 1)

    files = registry.files(1)
    assert files.folder.resolve() != store.resolve()
    assert sorted(p.name for p in files.folder.iterdir()) == sorted(p.name for p in store.iterdir())
    assert (files.folder / "scorer.npz").read_bytes() == (store / "scorer.npz").read_bytes()
    assert registry.files(1) is files  # once per process

    registry.forget(1)  # a version that failed is downloaded again, not read from this copy
    assert not files.folder.exists()
    again = registry.files(1)
    assert again.folder != files.folder and again.meta == files.meta

    broken = registry.client.create_model_version(
        registry.name, source=(tmp_path / "no-such-model").as_uri()
    )
    with pytest.raises(RegistryError, match=f"models:/fruits/{broken.version}/artifacts/fruits"):
        registry.files(int(broken.version))
