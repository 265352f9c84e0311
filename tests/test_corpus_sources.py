"""The whole bad-input corpus, a set of odd names and files too large to read through every
landing source: the project's source on a real folder, and on Azurite in listing and in
notification mode, and the memory source (which stands for Auto Loader: a source of the
``binaryFile`` schema only). Each uploaded file ends in exactly one table (predictions, or
quarantine with the reason RELIABILITY.md documents), or, for a hidden name, in neither; and
the stream goes on: each run ends normally."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fruits.azure import AzureStorage, BlobLocation
from fruits.config import Config
from fruits.console import log
from fruits.model.serving import ServedModel
from fruits.sinks.delta import open_lake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE
from fruits.sources.events import blob_created_message
from streaming.job import run_stream, start_query

from .bad_inputs import NOT_DISCOVERED, PREDICTED, corpus, name_cases
from .conftest import copy_registry, real_photos

pytestmark = pytest.mark.spark

SOURCES = ("folder", "blob-listing", "blob-notification", "memory")

# Files over images.max_bytes (20 MB): quarantined by their listed size, never read. The 2.2 GB
# one is over Spark's binaryFile limit (2 GB) and Arrow's; on a folder it is sparse (no disk).
LARGE = {"large/30MB.jpg": 30_000_000, "large/2.2GB.jpg": 2_200_000_000}
_JPEG_START = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
_BLOCK = 100 * 1024 * 1024


def _uploads() -> dict[str, tuple[bytes, str]]:
    """Every file to land: name under the landing -> (bytes, expected decision)."""
    photo = real_photos("Test", "Kiwi", 1)[0].read_bytes()
    files = {case.name: (case.data, case.expected) for case in corpus()}
    files.update({case.name: (photo, case.expected) for case in name_cases()})
    return files


def _through_folder_source(config: Config, files: dict[str, tuple[bytes, str]]) -> str:
    landing = Path(config.path("landing"))
    for name, (data, _) in files.items():
        (landing / name).parent.mkdir(parents=True, exist_ok=True)
        (landing / name).write_bytes(data)
    for name, size in LARGE.items():
        (landing / name).parent.mkdir(parents=True, exist_ok=True)
        with open(landing / name, "wb") as out:
            out.write(_JPEG_START)
            out.truncate(size)  # sparse: the size a listing reports, no data on disk
    run_stream(config, once=True)
    return f"file:{landing.resolve()}/"


def _upload_large_blob(container: Any, name: str, size: int) -> None:
    """A blob of ``size`` bytes from blocks of zeros staged one by one (never all in memory)."""
    blob = container.get_blob_client(name)
    zeros = bytes(_BLOCK)
    ids = []
    for index, offset in enumerate(range(0, size, _BLOCK)):
        block_id = f"{index:08d}"
        blob.stage_block(block_id, zeros[: min(_BLOCK, size - offset)])
        ids.append(block_id)
    blob.commit_block_list(ids)


def _through_blob_source(config: Config, files: dict[str, tuple[bytes, str]]) -> str:
    storage = AzureStorage(config.azure)
    location = BlobLocation.parse(config.path("landing"))
    notified = config.stream.discovery == "notification"
    if notified:
        # The first start lists the (empty) landing; from then on only events announce blobs.
        assert run_stream(config, once=True)["rows_in"] == 0
    container = storage.container(location.container, create=True)
    queue = storage.queue(config.stream.queue, create=True)
    for name, size in LARGE.items():
        _upload_large_blob(container, location.child(name), size)
    uploads = {
        name: (container.get_blob_client(location.child(name)), size)
        for name, size in LARGE.items()
    }
    for name, (data, _) in files.items():
        uploads[name] = (container.upload_blob(location.child(name), data), len(data))
    if notified:
        for name, (blob, size) in uploads.items():
            etag = blob.get_blob_properties().etag
            message = blob_created_message(
                "devstoreaccount1", location.container, location.child(name), etag, size
            )
            queue.send_message(message)
    run_stream(config, once=True)
    if notified:  # every message was used (or dropped: hidden names) and deleted
        assert queue.get_queue_properties().approximate_message_count == 0
    return f"az://{location.container}/{location.prefix}"


def _through_memory_source(
    spark: Any, config: Config, files: dict[str, tuple[bytes, str]], tmp_path: Path
) -> str:
    """The memory source has no discovery: it is fed only what a landing would discover."""
    from tests.memory_source import MemoryFeed, register

    register(spark)
    feed = MemoryFeed(tmp_path / "feed")
    now = dt.datetime.now(dt.UTC)
    rows = [(f"landing/{n}", d, now) for n, (d, e) in files.items() if e != NOT_DISCOVERED]
    # The memory source carries its bytes in Parquet: the 30 MB file only.
    rows.append(("landing/large/30MB.jpg", _JPEG_START.ljust(LARGE["large/30MB.jpg"], b"\0"), now))
    feed.add(rows)
    source = spark.readStream.format("fruits_memory").option("feed", str(feed.folder)).load()
    query, _ = start_query(
        spark,
        config,
        source,
        served=ServedModel(config, log=log),
        once=False,
        checkpoint=str(tmp_path / "memory-checkpoint"),
    )
    try:
        query.processAllAvailable()
    finally:
        query.stop()
    return "landing/"


@pytest.mark.parametrize("source", SOURCES)
def test_every_upload_ends_in_exactly_one_table_through_every_source(
    source: str,
    request: pytest.FixtureRequest,
    spark: Any,
    trained: tuple[Config, dict[str, Any]],
    make_config: Callable[..., Config],
    tmp_path: Path,
) -> None:
    files = _uploads()
    if source.startswith("blob"):
        config: Config = request.getfixturevalue("azure_config")
        discovery = source.removeprefix("blob-")
        config = dataclasses.replace(
            config,
            stream=dataclasses.replace(config.stream, discovery=discovery, backfill_interval=None),
        )
        prefix = _through_blob_source(config, files)
    else:
        copy_registry(trained[0], tmp_path)
        config = make_config(tmp_path)
        if source == "folder":
            prefix = _through_folder_source(config, files)
        else:
            prefix = _through_memory_source(spark, config, files, tmp_path)

    lake = open_lake(config)
    predicted = Counter(lake.read_arrow(PREDICTIONS).column("path").to_pylist())
    quarantine = lake.read_arrow(QUARANTINE).to_pylist()
    quarantined = Counter(r["path"] for r in quarantine)
    reasons = {r["path"]: (r["reason"], r["size_bytes"]) for r in quarantine}
    ended = {name: (predicted[prefix + name], quarantined[prefix + name]) for name in sorted(files)}
    expected = {
        name: (0, 0) if decision == NOT_DISCOVERED else (1, 0) if decision == PREDICTED else (0, 1)
        for name, (_, decision) in sorted(files.items())
    }
    assert ended == expected  # each file once, in the table its decision names, or nowhere
    assert {
        name: reasons[prefix + name]
        for name, (_, e) in files.items()
        if e not in (PREDICTED, NOT_DISCOVERED)
    } == {
        name: (decision, len(data))
        for name, (data, decision) in files.items()
        if decision not in (PREDICTED, NOT_DISCOVERED)
    }
    large = {n: s for n, s in LARGE.items() if source != "memory" or s < 2**31}
    assert {n: reasons.get(prefix + n) for n in large} == {
        n: ("too_large_bytes", s) for n, s in large.items()
    }
    assert sum(predicted.values()) + sum(quarantined.values()) == len(large) + sum(
        1 for _, e in files.values() if e != NOT_DISCOVERED
    )
