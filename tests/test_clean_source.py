"""Landing clean-up (``stream.clean_source``, Auto Loader's cleanSource): the files of committed
micro-batches are archived or deleted, those of a batch that crashed before its checkpoint
commit are not, and the replay still finds them; an archive never overwrites an earlier upload
of the same name. On a real folder and on Azurite, through the same source."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fruits.azure import AzureStorage, BlobLocation
from fruits.config import Config, load_config
from fruits.console import log
from fruits.errors import ConfigError
from fruits.model.serving import ServedModel
from fruits.sinks.delta import open_lake
from fruits.sinks.tables import PREDICTIONS
from fruits.sources.autoloader import autoloader_options
from fruits.sources.landing import landing_source
from streaming.job import checkpoint_path, run_stream, start_query

from .conftest import DATABRICKS_ENV, KNOWN_CLASSES, PROJECT, copy_registry, real_photos


def _cleaning(config: Config, mode: str, retention: str | None = None) -> Config:
    if config.path("landing").startswith("az://"):  # the test's own container, not a shared one
        landing = BlobLocation.parse(config.path("landing"))
        archive = f"az://{landing.container}/archive"
        config = dataclasses.replace(
            config, paths=dataclasses.replace(config.paths, archive=archive)
        )
    stream = dataclasses.replace(
        config.stream,
        clean_source=mode,
        clean_source_retention=retention,
        max_files_per_trigger=2,
    )
    return dataclasses.replace(config, stream=stream)


def _photos(n: int, skip: int = 0) -> dict[str, bytes]:
    """``n`` distinct real photos, named ``<Class>-<file>``."""
    photos = {}
    for label in KNOWN_CLASSES:
        for photo in real_photos("Test", label, n, skip=skip):
            photos[f"{label}-{photo.name}"] = photo.read_bytes()
    return dict(sorted(photos.items())[:n])


class Crash(RuntimeError):
    pass


def _crash_in_batch(config: Config, spark: Any, batch_id: int) -> None:
    """Run the stream until micro-batch ``batch_id`` has committed both tables, then fail it:
    the checkpoint never records that batch as committed (a crash between the two)."""
    checkpoint = checkpoint_path(config)

    def crash(outcome: Any) -> None:
        if outcome.batch_id == batch_id:
            raise Crash(f"crash after the Delta commits of batch {batch_id}")

    query, _ = start_query(
        spark,
        config,
        landing_source(spark, config, checkpoint),
        served=ServedModel(config, log=log),
        once=True,
        on_batch=crash,
    )
    with pytest.raises(Exception, match="crash after the Delta commits"):
        query.awaitTermination()


def _rows(config: Config) -> list[str]:
    return sorted(open_lake(config).read_arrow(PREDICTIONS).column("path").to_pylist())


@pytest.mark.spark
def test_folder_landing_archives_committed_batches_only(
    spark: Any,
    trained: tuple[Config, dict[str, Any]],
    make_config: Callable[..., Config],
    tmp_path: Path,
) -> None:
    copy_registry(trained[0], tmp_path)
    config = _cleaning(make_config(tmp_path), "archive")
    landing, archive = Path(config.path("landing")), Path(config.path("archive"))
    landing.mkdir(parents=True)
    photos = _photos(4)
    for name, data in photos.items():
        (landing / name).write_bytes(data)

    # Batches 0 and 1 of two photos each; batch 1 crashes after its Delta commits.
    _crash_in_batch(config, spark, batch_id=1)
    archived = {p.name for p in archive.rglob("*.jpg")}
    left = {p.name for p in landing.glob("*.jpg")}
    assert len(archived) == 2 and left == set(photos) - archived  # batch 0 only

    # The replay finds batch 1's files, Delta skips what it already holds, and the run's end
    # commits them: archived under their names in the landing, bytes intact.
    run_stream(config, once=True)
    assert [p.rsplit("/", 1)[-1] for p in _rows(config)] == sorted(photos)
    assert {p.name for p in archive.iterdir()} == set(photos)
    for name, data in photos.items():
        assert (archive / name).read_bytes() == data
    assert list(landing.glob("*.jpg")) == []

    # The same name uploaded again, with other bytes: a new arrival, archived beside the first.
    first = sorted(photos)[0]
    other = real_photos("Test", "Kiwi", 1, skip=5)[0].read_bytes()
    (landing / first).write_bytes(other)
    run_stream(config, once=True)
    assert len(_rows(config)) == 5
    kept = sorted(archive.glob(f"{first.rsplit('.', 1)[0]}*"))
    assert [p.read_bytes() for p in kept if p.name == first] == [photos[first]]
    assert [p.read_bytes() for p in kept if p.name != first] == [other]


@pytest.mark.spark
@pytest.mark.parametrize("mode", ["archive", "delete"])
def test_blob_landing_cleans_committed_batches_only(
    spark: Any, azure_config: Config, mode: str
) -> None:
    config = _cleaning(azure_config, mode)
    storage = AzureStorage(config.azure)
    location = BlobLocation.parse(config.path("landing"))
    archive = BlobLocation.parse(config.path("archive"))
    container = storage.container(location.container, create=True)
    photos = _photos(4)
    for name, data in photos.items():
        container.upload_blob(location.child(name), data)

    def names(where: BlobLocation) -> set[str]:
        blobs = container.list_blobs(name_starts_with=where.prefix)
        return {b.name.removeprefix(where.prefix) for b in blobs}

    _crash_in_batch(config, spark, batch_id=1)
    left = names(location)
    assert len(left) == 2  # batch 0's blobs are cleaned; batch 1's wait for its commit
    cleaned = set(photos) - left
    assert names(archive) == (cleaned if mode == "archive" else set())

    run_stream(config, once=True)  # the replay finds them; the run's end commits them
    assert [p.rsplit("/", 1)[-1] for p in _rows(config)] == sorted(photos)
    assert names(location) == set()
    if mode == "archive":  # a server-side copy: the same bytes, content type and metadata
        assert names(archive) == set(photos)
        for name, data in photos.items():
            assert container.download_blob(archive.child(name)).readall() == data
        # The same name again, with other bytes: a new arrival, archived beside the first.
        first = sorted(photos)[0]
        other = real_photos("Test", "Kiwi", 1, skip=5)[0].read_bytes()
        container.upload_blob(location.child(first), other)
        run_stream(config, once=True)
        assert len(_rows(config)) == 5
        again = sorted(names(archive) - set(photos))
        assert len(again) == 1 and again[0].endswith(".jpg")
        assert container.download_blob(archive.child(again[0])).readall() == other
        assert container.download_blob(archive.child(first)).readall() == photos[first]


@pytest.mark.spark
def test_blob_clean_up_waits_for_its_retention(spark: Any, azure_config: Config) -> None:
    config = _cleaning(azure_config, "delete", retention="1 hour")
    location = BlobLocation.parse(config.path("landing"))
    container = AzureStorage(config.azure).container(location.container, create=True)
    for name, data in _photos(2).items():
        container.upload_blob(location.child(name), data)
    assert run_stream(config, once=True)["predictions"] == 2
    # Committed, but an hour has not passed: still there.
    assert len(list(container.list_blobs(name_starts_with=location.prefix))) == 2


def test_clean_source_settings_are_checked_and_map_to_auto_loader() -> None:
    def config(name: str, **env: str) -> Config:
        environ = {"FRUITS_ROOT": "/r", **DATABRICKS_ENV, **env}
        return load_config(PROJECT / "conf" / f"{name}.yaml", environ=environ)

    assert config("local").stream.clean_source == "off"  # off by default
    assert config("local", FRUITS__STREAM__CLEAN_SOURCE="off").stream.clean_source == "off"
    with pytest.raises(ConfigError, match=r"'paths\.archive' .* must not be under paths\.landing"):
        config(
            "local", FRUITS__STREAM__CLEAN_SOURCE="archive", FRUITS__PATHS__ARCHIVE="/r/landing/a"
        )
    # A retention means the same on a folder as on Blob (one source for both).
    assert config(
        "local",
        FRUITS__STREAM__CLEAN_SOURCE="delete",
        FRUITS__STREAM__CLEAN_SOURCE_RETENTION="1 day",
    )
    with pytest.raises(ConfigError, match=r"'paths\.archive' .* must be on the landing's storage"):
        config("local", FRUITS__STREAM__CLEAN_SOURCE="archive", FRUITS__PATHS__ARCHIVE="az://a/b")
    assert config(
        "azurite",
        FRUITS__STREAM__CLEAN_SOURCE="delete",
        FRUITS__STREAM__CLEAN_SOURCE_RETENTION="1 day",
    )
    with pytest.raises(ConfigError, match="more than 7 days"):
        config(
            "databricks",
            FRUITS__STREAM__CLEAN_SOURCE="delete",
            FRUITS__STREAM__CLEAN_SOURCE_RETENTION="7 days",
        )

    databricks = config(
        "databricks",
        FRUITS__STREAM__CLEAN_SOURCE="archive",
        FRUITS__STREAM__CLEAN_SOURCE_RETENTION="2 days",
    )
    options = autoloader_options(databricks, "/Volumes/c/s/v/checkpoints/predictions")
    assert options["cloudFiles.cleanSource"] == "MOVE"
    assert options["cloudFiles.cleanSource.retentionDuration"] == "2 days"
    assert options["cloudFiles.cleanSource.moveDestination"] == databricks.path("archive")
    assert "cloudFiles.cleanSource" not in autoloader_options(config("databricks"), "/ck")
