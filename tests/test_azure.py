"""Azure, emulated by a real Azurite: uploads, Blob discovery (both modes), Delta on az://."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from fruits.azure import AzureStorage, BlobLocation
from fruits.config import Config, load_config
from fruits.console import log
from fruits.features.featurizer import ExtractorSpec
from fruits.features.store import featurize_labelled
from fruits.model.serving import ServedModel
from fruits.sinks.delta import open_lake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE
from fruits.sources.autoloader import autoloader_options
from fruits.sources.events import blob_created_message
from fruits.sources.landing import landing_source
from fruits.sources.names import NameFilter
from fruits.sources.training import read_labelled
from fruits.upload import plan_upload, upload
from streaming.job import checkpoint_path, run_stream, start_query

from .conftest import (
    DATABRICKS_ENV,
    KNOWN_CLASSES,
    PROJECT,
    copy_tree,
    hadoop_landing,
    real_photos,
)

pytestmark = pytest.mark.spark


def _table(config: Config, table: str) -> pa.Table:
    return open_lake(config).read_arrow(table)


def _upload(config: Config, files: list[Path]) -> Any:
    return upload(
        plan_upload([str(f) for f in files], ["jpg"]), config.path("landing"), azure=config.azure
    )


def start_landing_query(spark: Any, config: Config) -> Any:
    """The prediction query over the configured (Blob) landing, as ``fruits stream`` runs it."""
    source = landing_source(spark, config, checkpoint_path(config))
    query, _ = start_query(spark, config, source, served=ServedModel(config, log=log), once=False)
    return query


def _landed_names(config: Config) -> list[str]:
    location = BlobLocation.parse(config.path("landing"))
    blobs = AzureStorage(config.azure).list_blobs(location, NameFilter(["jpg"]))
    return sorted(location.url(b.name) for b in blobs)


def test_upload_to_blob_sets_content_type_and_skips_the_same_content(
    azure_config: Config, tmp_path: Path
) -> None:
    folder = copy_tree(tmp_path / "photos", "Test", ("Kiwi",), 3) / "Kiwi"
    first = _upload(azure_config, [folder])
    again = _upload(azure_config, [folder])
    assert (first.uploaded, first.skipped_same_content, first.failed) == (3, 0, [])
    assert (again.uploaded, again.skipped_same_content) == (0, 3)

    location = BlobLocation.parse(azure_config.path("landing"))
    container = AzureStorage(azure_config.azure).container(location.container)
    names = sorted(b.name for b in container.list_blobs())
    assert names == sorted(f"photos/Kiwi/{p.name}" for p in folder.iterdir())
    props = container.get_blob_client(names[0]).get_blob_properties()
    assert props.content_settings.content_type == "image/jpeg"
    assert len(props.metadata["sha256"]) == 64


def _unique_photos(folder: Path, n: int) -> list[Path]:
    """``n`` real Test photos of the known classes, renamed ``<Class>-<name>`` (file names
    repeat across classes, and a blob of the same name would be a rewrite)."""
    folder.mkdir(parents=True, exist_ok=True)
    per_class = -(-n // len(KNOWN_CLASSES))
    photos = [p for label in KNOWN_CLASSES for p in real_photos("Test", label, per_class, skip=1)]
    copies = []
    for photo in photos[:n]:
        copy = folder / f"{photo.parent.name}-{photo.name}"
        copy.write_bytes(photo.read_bytes())
        copies.append(copy)
    return copies


def test_listing_mode_loses_nothing_when_50_blobs_arrive_during_a_running_query(
    spark: Any, azure_config: Config, tmp_path: Path
) -> None:
    config = azure_config
    photos = _unique_photos(tmp_path / "photos", 50)
    query = start_landing_query(spark, config)
    failures: list[str] = []

    def uploader() -> None:
        # 5 waves of 10 photos, each uploaded by 8 threads at once, while triggers run.
        for start in range(0, 50, 10):
            failures.extend(_upload(config, photos[start : start + 10]).failed)
            time.sleep(0.3)

    thread = threading.Thread(target=uploader)
    try:
        thread.start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            query.processAllAvailable()
            rows = _table(config, PREDICTIONS).num_rows + _table(config, QUARANTINE).num_rows
            if not thread.is_alive() and rows >= 50:
                break
            time.sleep(0.5)
    finally:
        thread.join()
        query.stop()
    assert failures == []
    predictions = _table(config, PREDICTIONS)
    paths = predictions.column("path").to_pylist()
    assert len(paths) == 50 and sorted(paths) == _landed_names(config)  # none lost, none twice
    assert _table(config, QUARANTINE).num_rows == 0
    assert set(predictions.column("label").to_pylist()) <= set(KNOWN_CLASSES)

    again = run_stream(config, once=True)  # a restart finds nothing new
    assert again["rows_in"] == 0 and _table(config, PREDICTIONS).num_rows == 50


def test_notification_mode_delivers_each_announced_photo_once_and_backfills_lost_events(
    azure_config: Config, tmp_path: Path
) -> None:
    config = dataclasses.replace(
        azure_config,
        stream=dataclasses.replace(
            azure_config.stream, discovery="notification", backfill_interval=None
        ),
    )
    storage = AzureStorage(config.azure)
    location = BlobLocation.parse(config.path("landing"))
    queue = storage.queue(config.stream.queue, create=True)

    def event(container: str, name: str, etag: str) -> str:
        return blob_created_message("devstoreaccount1", container, name, etag, 1)

    assert run_stream(config, once=True)["rows_in"] == 0  # first start: empty landing

    photos = _unique_photos(tmp_path / "photos", 7)
    announced, lost = photos[:6], photos[6:]
    assert _upload(config, announced).uploaded == 6
    container = storage.container(location.container)
    for blob in container.list_blobs(name_starts_with=location.prefix):
        queue.send_message(event(location.container, blob.name, str(blob.etag)))
    first = next(iter(container.list_blobs()))
    queue.send_message(event(location.container, first.name, str(first.etag)))  # a duplicate
    queue.send_message(event(location.container, "photos/deleted-since.jpg", "0x1"))
    queue.send_message(event("another-container", "photos/x.jpg", "0x2"))
    queue.send_message("not an Event Grid message")
    _upload(config, lost)  # a photo whose event was lost: only a listing (backfill) finds it

    result = run_stream(config, once=True)
    assert (result["predictions"], result["quarantined"]) == (6, 0)
    paths = _table(config, PREDICTIONS).column("path").to_pylist()
    assert len(set(paths)) == 6 and not any(lost[0].name in p for p in paths)
    # Every message was used or discarded, and deleted once its batch was committed.
    assert queue.get_queue_properties().approximate_message_count == 0

    backfill = dataclasses.replace(
        config, stream=dataclasses.replace(config.stream, backfill_interval="1 second")
    )
    again = run_stream(backfill, once=True)
    assert again["predictions"] == 1
    assert sorted(_table(config, PREDICTIONS).column("path").to_pylist()) == _landed_names(config)


def test_training_data_on_blob_reads_like_a_folder(
    spark: Any, azure_config: Config, small_dataset: Path
) -> None:
    storage = AzureStorage(azure_config.azure)
    container = storage.container(
        BlobLocation.parse(azure_config.path("lake")).container, create=True
    )
    training = small_dataset / "Training"
    for file in sorted(training.rglob("*.jpg"))[::5]:
        container.upload_blob(f"data/Training/{file.parent.name}/{file.name}", file.read_bytes())
    location = f"az://{container.container_name}/data/Training"

    listed = read_labelled(spark, location, azure_config.images, azure_config.azure)
    labels = sorted(r.label for r in listed.select("label").collect())
    assert labels == sorted(f.parent.name for f in sorted(training.rglob("*.jpg"))[::5])

    features, run = featurize_labelled(
        spark,
        open_lake(azure_config),
        location,
        split="Training",
        spec=ExtractorSpec.from_config(azure_config),
        images=azure_config.images,
        azure=azure_config.azure,
        chunk_size=4,
    )
    assert run.computed + run.cached == run.images == len(labels) and not run.rejected
    assert features.count() == len(labels)
    assert {r.path.split("/")[3] for r in features.select("path").collect()} == {"data"}


def test_spark_reads_blob_through_hadoop_and_its_delta_writer_keeps_the_lake_on_blob(
    spark: Any, azure_config: Config, small_dataset: Path, tmp_path: Path
) -> None:
    """The open-source path on Blob: Spark's ``binaryFile`` reader and file stream source over
    ``abfs://`` (Hadoop's ABFS driver on Azurite's Blob endpoint) and Spark's Delta writer on
    the ``az://`` lake; delta-rs reads the same rows back."""
    config = dataclasses.replace(
        azure_config,
        spark=dataclasses.replace(azure_config.spark, delta_writer="spark"),
        paths=dataclasses.replace(azure_config.paths, landing=hadoop_landing(azure_config)),
    )
    assert config.path("landing").startswith("abfs://landing-")
    storage = AzureStorage(config.azure)
    lake_container = BlobLocation.parse(config.path("lake")).container
    container = storage.container(lake_container, create=True)
    training = sorted((small_dataset / "Training").rglob("*.jpg"))[::6]
    for file in training:
        container.upload_blob(f"data/Training/{file.parent.name}/{file.name}", file.read_bytes())
    location = storage.hadoop_url(f"az://{lake_container}/data/Training")
    listed = read_labelled(spark, location, config.images, config.azure)
    assert sorted(r.label for r in listed.select("label").collect()) == sorted(
        f.parent.name for f in training
    )

    summary = _upload(config, _unique_photos(tmp_path / "photos", 4))
    assert summary.uploaded == 4
    landing = BlobLocation.parse(config.path("landing"))
    storage.container(landing.container).upload_blob(landing.child("broken.jpg"), b"\xff\xd8 no")
    first = run_stream(config, once=True)
    assert (first["predictions"], first["quarantined"]) == (4, 1)
    assert run_stream(config, once=True)["rows_in"] == 0

    by_spark = open_lake(config).read_arrow(PREDICTIONS)
    by_delta_rs = open_lake(azure_config).read_arrow(PREDICTIONS)  # az:// through delta-rs
    assert by_spark.sort_by("path").to_pylist() == by_delta_rs.sort_by("path").to_pylist()
    assert all(p.startswith("abfs://landing-") for p in by_delta_rs.column("path").to_pylist())
    assert open_lake(azure_config).read_arrow(QUARANTINE).column("reason").to_pylist() == [
        "not_an_image"
    ]


def test_databricks_config_switches_to_auto_loader_with_the_same_settings() -> None:
    config = load_config(PROJECT / "conf" / "databricks.yaml", environ=DATABRICKS_ENV)
    assert config.stream.autoloader and config.spark.delta_writer == "spark"
    assert config.path("landing").startswith("abfss://")
    options = autoloader_options(config, "abfss://lake@acct.dfs.core.windows.net/ck/predictions")
    assert options["cloudFiles.format"] == "binaryFile"
    assert options["cloudFiles.useManagedFileEvents"] == "true"  # no credential, no backfill
    assert "cloudFiles.backfillInterval" not in options and "cloudFiles.queueName" not in options
    # Unity Catalog: the ONNX export on a Volume (not /dbfs), the registry in Unity Catalog.
    assert config.featurizer.onnx_dir and config.featurizer.onnx_dir.startswith("/Volumes/")
    assert config.mlflow.registry_uri == "databricks-uc"
    queue = autoloader_options(
        load_config(
            PROJECT / "conf" / "databricks.yaml",
            environ={**DATABRICKS_ENV, "FRUITS__STREAM__AUTOLOADER_NOTIFICATIONS": "queue"},
        ),
        "/ck",
        environ={"AUTOLOADER_QUEUE_CONNECTION_STRING": "AccountName=a;AccountKey=k"},
    )
    assert queue["cloudFiles.useNotifications"] == "true"
    assert queue["cloudFiles.queueName"] == config.stream.queue
    assert queue["cloudFiles.connectionString"] == "AccountName=a;AccountKey=k"
    assert queue["cloudFiles.backfillInterval"] == config.stream.backfill_interval
    assert options["cloudFiles.maxFilesPerTrigger"] == str(config.stream.max_files_per_trigger)
    assert options["cloudFiles.schemaLocation"].endswith("/ck/predictions/schema")
    assert (
        options["pathGlobFilter"].startswith("*.{") and "[jJ][pP][gG]" in options["pathGlobFilter"]
    )
    assert "[hH][eE][iI][cC]" in options["pathGlobFilter"]
    listing = autoloader_options(
        load_config(
            PROJECT / "conf" / "databricks.yaml",
            environ={**DATABRICKS_ENV, "FRUITS__STREAM__DISCOVERY": "listing"},
        ),
        "/ck",
    )
    assert listing["cloudFiles.useNotifications"] == "false"
    assert "cloudFiles.queueName" not in listing


def test_connection_string_credentials_reach_delta_rs_without_leaking_into_pickles() -> None:
    import pickle

    settings = load_config(PROJECT / "conf" / "azurite.yaml", environ={}).azure
    settings = dataclasses.replace(settings, use_emulator=False)
    secret = "QUJDREVGR0hJSktMTU5PUA=="
    environ = {
        "AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=acct;"
        f"AccountKey={secret};EndpointSuffix=core.windows.net"
    }
    storage = AzureStorage(settings, environ)
    assert storage.delta_storage_options() == {"account_name": "acct", "account_key": secret}
    assert secret not in storage.mode
    assert secret.encode() not in pickle.dumps(storage)  # what Spark ships to its tasks
