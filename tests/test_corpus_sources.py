"""The whole bad-input corpus and a set of odd names through every landing source: Spark's file
source on a real folder, the Blob source on Azurite in listing and in notification mode, and
the memory source. Each uploaded file ends in exactly one table (predictions, or quarantine
with the reason RELIABILITY.md documents), or, for a hidden name, in neither."""

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
from fruits.sources.files import listed_files
from streaming.job import run_stream, start_query

from .bad_inputs import NOT_DISCOVERED, PREDICTED, corpus, name_cases
from .conftest import copy_registry, real_photos

pytestmark = pytest.mark.spark

SOURCES = ("file", "blob-listing", "blob-notification", "memory")


def _uploads() -> dict[str, tuple[bytes, str]]:
    """Every file to land: name under the landing -> (bytes, expected decision)."""
    photo = real_photos("Test", "Kiwi", 1)[0].read_bytes()
    files = {case.name: (case.data, case.expected) for case in corpus()}
    files.update({case.name: (photo, case.expected) for case in name_cases()})
    return files


def _through_file_source(config: Config, files: dict[str, tuple[bytes, str]]) -> str:
    landing = Path(config.path("landing"))
    for name, (data, _) in files.items():
        (landing / name).parent.mkdir(parents=True, exist_ok=True)
        (landing / name).write_bytes(data)
    run_stream(config, once=True)
    return f"file:{landing.resolve()}/"


def _through_blob_source(config: Config, files: dict[str, tuple[bytes, str]]) -> str:
    storage = AzureStorage(config.azure)
    location = BlobLocation.parse(config.path("landing"))
    notified = config.stream.discovery == "notification"
    if notified:
        # The first start lists the (empty) landing; from then on only events announce blobs.
        assert run_stream(config, once=True)["rows_in"] == 0
    container = storage.container(location.container, create=True)
    queue = storage.queue(config.stream.queue, create=True)
    for name, (data, _) in files.items():
        blob = container.upload_blob(location.child(name), data)
        if notified:
            etag = blob.get_blob_properties().etag
            message = blob_created_message(
                "devstoreaccount1", location.container, location.child(name), etag, len(data)
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
    feed.add([(f"landing/{n}", d, now) for n, (d, e) in files.items() if e != NOT_DISCOVERED])
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
        if source == "file":
            prefix = _through_file_source(config, files)
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
    assert sum(predicted.values()) + sum(quarantined.values()) == sum(
        1 for _, e in files.values() if e != NOT_DISCOVERED
    )


def test_a_batchs_files_come_from_the_file_sources_log_spelt_as_binary_file_spells_them(
    tmp_path: Path,
) -> None:
    """Spark's log keeps URIs (``%20``, ``%25``...); rows carry decoded Hadoop paths. A batch's
    range of source log entries comes from the query's offset log: query batch 9 is source
    entry 9 (in the compact file, which also holds entry 8); query batch 10, after a restart,
    spans entries 10 and 11 (one logged before the crash)."""
    log_folder = tmp_path / "sources" / "0"
    log_folder.mkdir(parents=True)
    entries = [
        ("file:///l/a%20b%25zz.jpg", 8),
        ("file:///l/%5Bab%5D%23%3F.jpg", 9),
        ("abfs://c@acct.dfs.core.windows.net/p/%C3%BC%20x.jpg", 9),
    ]
    lines = [f'{{"path":"{p}","timestamp":1796121407643,"batchId":{b}}}' for p, b in entries]
    (log_folder / "9.compact").write_text("\n".join(["v1", *lines]) + "\n")
    for log_id in (10, 11):
        entry = f'{{"path":"file:///l/{log_id}.jpg","timestamp":1796121407643,"batchId":{log_id}}}'
        (log_folder / str(log_id)).write_text(f"v1\n{entry}\n")
    offsets = tmp_path / "offsets"
    offsets.mkdir()
    for batch, log_offset in ((8, 8), (9, 9), (10, 11)):
        (offsets / str(batch)).write_text(
            f'v1\n{{"batchWatermarkMs":0}}\n{{"logOffset":{log_offset}}}\n'
        )
    files = listed_files(None, 9, checkpoint=str(tmp_path))  # type: ignore[arg-type]
    assert [f.path for f in files] == [
        "file:/l/[ab]#?.jpg",
        "abfs://c@acct.dfs.core.windows.net/p/ü x.jpg",
    ]
    assert files[0].modified == dt.datetime(2026, 12, 1, 10, 36, 47, 643000, tzinfo=dt.UTC)
    after_restart = listed_files(None, 10, checkpoint=str(tmp_path))  # type: ignore[arg-type]
    assert [f.path for f in after_restart] == ["file:/l/10.jpg", "file:/l/11.jpg"]
    with pytest.raises(RuntimeError, match="no entry for micro-batch 11"):
        listed_files(None, 11, checkpoint=str(tmp_path))  # type: ignore[arg-type]
