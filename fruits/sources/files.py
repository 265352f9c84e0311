"""Spark's file source (``binaryFile``) over a landing folder (the embedded default), or over
Blob through Hadoop's ABFS driver (``abfs[s]://``).

Spark's ``binaryFile`` reader returns no row for a zero-length file (``PartitioningAwareFileIndex``
keeps only non-empty files), although the stream source discovered it and put it in the
micro-batch: an empty upload would end in neither table. :func:`listed_files` reads the batch's
files from the source's own log in the checkpoint, so the step can quarantine the ones that gave
no row (:mod:`streaming.step`). The log is what Spark itself replays, so a replayed batch lists
exactly the same files; it works alike for a folder and for ``abfs://``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from fruits.azure import AzureStorage, BlobLocation
from fruits.config import is_url
from fruits.sources.names import extension_glob
from fruits.sources.schema import BINARY_FILE_SCHEMA
from fruits.spark import on_databricks

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.config import Config

__all__ = ["ListedFile", "file_source", "first_start", "listed_files"]


def file_source(spark: SparkSession, config: Config, checkpoint: str) -> DataFrame:
    """New photos in ``paths.landing`` (recursively), oldest first, as a streaming DataFrame.

    Uploaders write a hidden name (``.x``) and rename it when complete: Spark ignores hidden
    files, so a half-written photo is never read.
    """
    landing = config.path("landing")
    if not is_url(landing):
        Path(landing).mkdir(parents=True, exist_ok=True)
    elif landing.startswith(("abfs://", "abfss://")) and not on_databricks():
        # Blob through Hadoop: as for a folder, the container exists from the start.
        storage = AzureStorage(config.azure)
        if storage.configured:
            storage.container(BlobLocation.parse(landing).container, create=True)
    stream = config.stream
    # A micro-batch names its files one by one; above this many paths Spark stats them in a
    # Spark job of one task per file (2.3 s of a 4.7 s batch of 512 photos, BENCHMARKS.md).
    # Up to a whole batch, the driver stats them itself (microseconds each on a local disk).
    spark.conf.set(
        "spark.sql.sources.parallelPartitionDiscovery.threshold",
        str(max(32, stream.max_files_per_trigger)),
    )
    reader = (
        spark.readStream.format("binaryFile")
        .schema(BINARY_FILE_SCHEMA)
        .option("pathGlobFilter", extension_glob(config.images.extensions))
        .option("recursiveFileLookup", "true")
        .option("maxFilesPerTrigger", stream.max_files_per_trigger)
    )
    if stream.max_bytes_per_trigger:
        reader = reader.option("maxBytesPerTrigger", stream.max_bytes_per_trigger)
    if stream.clean_source != "off":
        # Spark moves (Hadoop rename, to the archive + the file's full path) or deletes a
        # batch's files in FileStreamSource.commit, called once the batch is in the commit
        # log, i.e. after the step's Delta commits; best effort, in a background thread.
        reader = reader.option("cleanSource", stream.clean_source)
        if stream.clean_source == "archive":
            # az:// in the config: the same container through Hadoop's ABFS driver.
            archive = AzureStorage(config.azure).hadoop_url(config.path("archive"))
            reader = reader.option("sourceArchiveDir", archive)
    df = reader.load(landing)
    if not stream.include_existing_files:
        # Auto Loader's includeExistingFiles=false: only photos newer than the first start.
        from pyspark.sql import functions as F

        df = df.where(F.col("modificationTime") >= F.lit(first_start(checkpoint)))
    return df


def first_start(checkpoint: str) -> dt.datetime:
    """When this checkpoint's query first started (recorded beside it on first call)."""
    marker = Path(f"{checkpoint.rstrip('/')}.first-start.json")
    if marker.exists():
        return dt.datetime.fromisoformat(json.loads(marker.read_text())["first_start"])
    now = dt.datetime.now(dt.UTC)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"first_start": now.isoformat()}))
    return now


@dataclass(frozen=True)
class ListedFile:
    """A file Spark's file source put in a micro-batch."""

    path: str  # spelt as binaryFile's ``path`` column spells it
    modified: dt.datetime


def listed_files(spark: SparkSession, batch_id: int, *, checkpoint: str) -> list[ListedFile]:
    """The files of micro-batch ``batch_id`` of the (single) file source of the query whose
    checkpoint is ``checkpoint``.

    The source numbers its own log (``sources/0/<n>``) apart from the query's batches: after a
    restart, a batch may take the files of several source log entries (one was logged before
    the crash, another after). So the batch's range comes from the query's offset log:
    ``offsets/<batch_id>`` holds the source's ``logOffset`` at the batch's end, the previous
    batch's file its start; the files are the log entries in between, read from
    ``sources/0/<n>``, or ``<n>.compact`` when Spark compacted the log there (every
    ``fileSource.log.compactInterval``, 10: a compact file lists every file the source has
    seen, so reading it costs what Spark itself has just spent rewriting it)."""
    root = checkpoint.rstrip("/")
    end = _log_offset(spark, f"{root}/offsets/{batch_id}")
    if end is None:
        raise RuntimeError(f"the query's offset log has no entry for micro-batch {batch_id}")
    start = _log_offset(spark, f"{root}/offsets/{batch_id - 1}") if batch_id > 0 else None
    first = -1 if start is None else start
    files: list[ListedFile] = []
    for log_id in range(first + 1, end + 1):
        files.extend(_source_log_entry(spark, f"{root}/sources/0", log_id))
    return files


def _log_offset(spark: SparkSession, path: str) -> int | None:
    """The file source's ``logOffset`` in one of the query's offset files (``v1``, the batch's
    metadata, then one line per source: the only source's ``{"logOffset": n}``)."""
    text = _read_text(spark, path)
    if text is None:
        return None
    lines = text.splitlines()
    return int(json.loads(lines[2])["logOffset"])


def _source_log_entry(spark: SparkSession, folder: str, log_id: int) -> list[ListedFile]:
    for name in (str(log_id), f"{log_id}.compact"):
        text = _read_text(spark, f"{folder}/{name}")
        if text is not None:
            return _log_entries(text, log_id)
    raise RuntimeError(f"the file source's log has no entry {log_id} under {folder}")


def _log_entries(text: str, log_id: int) -> list[ListedFile]:
    """Spark's ``FileStreamSourceLog``: ``v1``, then one JSON ``FileEntry`` a line (``path`` a
    URI, ``timestamp`` in ms, ``batchId``: the log entry's id); a compact file holds every
    earlier entry's too."""
    files = []
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        entry = json.loads(line)
        if entry["batchId"] == log_id:
            modified = dt.datetime.fromtimestamp(entry["timestamp"] / 1000, dt.UTC)
            files.append(ListedFile(_binary_file_path(entry["path"]), modified))
    return files


def _binary_file_path(uri: str) -> str:
    """A file URI from Spark's log (``file:///a/b%20c.jpg``) as ``binaryFile`` spells the
    file's ``path`` (Hadoop's ``Path.toString``: ``file:/a/b c.jpg``, decoded)."""
    parts = urlsplit(uri)
    authority = f"//{parts.netloc}" if parts.netloc else ""
    return f"{parts.scheme}:{authority}{unquote(parts.path)}"


def _read_text(spark: SparkSession, path: str) -> str | None:
    """A small text file of the checkpoint, or None when it does not exist: read directly when
    local, through Spark (Hadoop's file systems) when it is a URL."""
    if not is_url(path):
        local = Path(path.removeprefix("file:"))
        return local.read_text() if local.exists() else None
    from pyspark.errors import AnalysisException

    try:
        return "\n".join(r.value for r in spark.read.text(path).collect())
    except AnalysisException:
        return None
