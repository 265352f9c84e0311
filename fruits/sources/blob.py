"""``format("fruits_blob")``: photos in a Blob container as a Spark source, batch or streaming.

Rows have the ``binaryFile`` schema (path, modificationTime, length, content), so the jobs
cannot tell it from Spark's file source. This is the emulated-Azure path of DESIGN.md: on
Databricks, Auto Loader (``cloudFiles``) does the same job with Spark's own Azure connector.

* batch (``spark.read``): every photo under the location, e.g. ``fruits train --data az://``;
* streaming (``spark.readStream``), Auto Loader-style, in one of two discovery modes:

  - ``listing``: each trigger lists the prefix and offers blobs it has not offered before;
  - ``notification``: each trigger reads ``Microsoft.Storage.BlobCreated`` events (Event Grid's
    schema) from a Storage Queue, so its cost grows with the new photos, not the container;
    a listing pass every ``backfill_interval`` catches events that were lost. A message is
    deleted only once the micro-batch holding its blob is committed.

  With ``clean_source`` (Auto Loader's ``cleanSource``), the blobs of a committed micro-batch
  are archived (copied under ``archive``, then deleted) or deleted once ``clean_retention_s``
  has passed since that commit; only the version that was read (its ETag), never a rewrite.

The streaming offset is a sequence number in a :class:`~fruits.sources.discovery.DiscoveryState`
kept in the query's checkpoint (``state`` option), so a replayed micro-batch reads exactly the
same blobs and a blob is offered once. ``SupportsTriggerAvailableNow`` gives ``--once``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql.datasource import (
    DataSource,
    DataSourceReader,
    DataSourceStreamReader,
    InputPartition,
)
from pyspark.sql.streaming.datasource import (
    ReadAllAvailable,
    ReadLimit,
    ReadMaxFiles,
    SupportsTriggerAvailableNow,
)

from fruits.azure import AzureStorage, BlobLocation
from fruits.config import AzureConfig, interval_seconds, is_url
from fruits.errors import ConfigError
from fruits.sources.discovery import Arrival, DiscoveryState, utc
from fruits.sources.events import parse_blob_events
from fruits.sources.names import NameFilter
from fruits.sources.schema import BINARY_FILE_SCHEMA
from fruits.spark import task_slots

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.config import Config, ImagesConfig

__all__ = ["BlobDataSource", "BlobSourceOptions", "read_blobs", "register", "stream_blobs"]

# A received event stays invisible this long; a batch is normally committed well before, and if
# not, the message comes back, is recognised as already offered, and deleted then.
_VISIBILITY_TIMEOUT_S = 900
_MESSAGES_PER_TRIGGER = 1000


@dataclass(frozen=True)
class BlobSourceOptions:
    """Everything the source needs, passed through Spark as one JSON option (no secrets)."""

    location: str
    azure: AzureConfig
    extensions: tuple[str, ...]
    glob: str | None = None
    max_photo_bytes: int = 20_000_000
    names: tuple[str, ...] | None = None  # batch: exactly these blobs instead of a listing
    # streaming only: the query's checkpoint (local or mounted); the discovery state lives in
    # it, so deleting the checkpoint resets both together
    checkpoint: str = ""
    discovery: str = "listing"
    queue: str = "landing-events"
    max_files_per_trigger: int = 1000
    max_bytes_per_trigger: int | None = None
    include_existing_files: bool = True
    max_file_age_s: float = 7 * 86400.0
    backfill_interval_s: float | None = 3600.0
    parallelism: int = 2
    clean_source: str = "off"  # "off", "archive" (to ``archive``) or "delete"
    clean_retention_s: float = 0.0  # after the commit of the blob's batch
    archive: str = ""  # az:// location of archived blobs (their names relative to the landing)

    def to_option(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> BlobSourceOptions:
        raw = json.loads(options["fruits"])
        raw["azure"] = AzureConfig(**raw["azure"])
        raw["extensions"] = tuple(raw["extensions"])
        raw["names"] = tuple(raw["names"]) if raw["names"] is not None else None
        return cls(**raw)


# (name, etag or None for "whatever is there", size, modified epoch seconds)
_Blob = tuple[str, str | None, int, float]


class _Blobs(InputPartition):
    """Blobs one Spark task downloads."""

    def __init__(self, blobs: list[_Blob]) -> None:
        self.blobs = blobs


def _split(blobs: Sequence[_Blob], parts: int) -> list[_Blobs]:
    parts = max(1, min(parts, len(blobs)))
    return [_Blobs(list(blobs[i::parts])) for i in range(parts)] if blobs else []


def _download(options: BlobSourceOptions, partition: InputPartition) -> Iterator[tuple[Any, ...]]:
    """Rows for the blobs of one partition. A blob deleted or rewritten since it was
    discovered gives ``content = None`` (the step quarantines it as ``missing``); one larger
    than the photo limit is read only far enough for the decoder to reject it."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

    assert isinstance(partition, _Blobs)
    location = BlobLocation.parse(options.location)
    container = AzureStorage(options.azure).container(location.container)
    for name, etag, size, modified in partition.blobs:
        length = options.max_photo_bytes + 1 if size > options.max_photo_bytes else None
        content: bytes | None
        try:
            if etag is None:  # a batch read of named blobs: whatever is there now
                download = container.download_blob(name, length=length)
            else:  # exactly the version discovered, not a rewrite that came after it
                download = container.download_blob(
                    name,
                    length=length,
                    etag=f'"{etag}"',
                    match_condition=MatchConditions.IfNotModified,
                )
            content = download.readall()
        except (ResourceNotFoundError, ResourceModifiedError):
            content = None
        yield (location.url(name), utc(modified), size, content)


class BlobBatchReader(DataSourceReader):
    def __init__(self, options: BlobSourceOptions) -> None:
        self.options = options

    def partitions(self) -> Sequence[InputPartition]:
        blobs: list[_Blob]
        if self.options.names is not None:
            blobs = [(name, None, 0, 0.0) for name in self.options.names]
        else:
            location = BlobLocation.parse(self.options.location)
            accept = NameFilter(self.options.extensions, self.options.glob, under=location.prefix)
            listing = AzureStorage(self.options.azure).list_blobs(location, accept)
            blobs = [(b.name, b.etag, b.size, b.last_modified.timestamp()) for b in listing]
        # About 64 photos per task: enough tasks to spread the downloads over the cluster.
        return _split(blobs, max(1, len(blobs) // 64))

    def read(self, partition: InputPartition) -> Iterator[tuple[Any, ...]]:
        return _download(self.options, partition)


class BlobStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Runs in Spark's source-planning Python process (discovery, offsets, commits); only
    :meth:`read` runs in the executors, on a pickled copy without clients or state."""

    def __init__(self, options: BlobSourceOptions) -> None:
        self.options = options
        self._storage = AzureStorage(options.azure)
        self._location = BlobLocation.parse(options.location)
        self._accept = NameFilter(options.extensions, options.glob, under=self._location.prefix)
        self._checkpoint = Path(options.checkpoint)
        self._state_path = self._checkpoint / "discovery" / "state.sqlite"
        self._state = DiscoveryState.open(self._state_path, max_file_age_s=options.max_file_age_s)
        self._queue: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.options = state["options"]

    # -- offsets -----------------------------------------------------------------------------

    def initialOffset(self) -> dict[str, int]:
        return {"seq": 0}

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxFiles(self.options.max_files_per_trigger)

    def latestOffset(self, start: dict[str, int], limit: ReadLimit) -> dict[str, int]:
        self._sync_commits()
        self._clean_due()
        self._discover()
        if isinstance(limit, ReadAllAvailable):
            max_files, max_bytes = None, None
        else:
            max_files = getattr(limit, "max_files", self.options.max_files_per_trigger)
            max_bytes = self.options.max_bytes_per_trigger
        end = self._state.end_offset(start["seq"], max_files=max_files, max_bytes=max_bytes)
        return {"seq": end}

    def prepareForTriggerAvailableNow(self) -> None:
        """``--once``: what is discoverable now, and nothing that arrives later."""
        self._sync_commits()
        self._discover()
        self._state.target = self._state.last_seq
        self._state.save()

    def partitions(self, start: dict[str, int], end: dict[str, int]) -> Sequence[InputPartition]:
        arrivals = self._state.between(start["seq"], end["seq"])
        if len(arrivals) != end["seq"] - start["seq"]:
            raise RuntimeError(
                f"discovery state {self._state_path} lacks arrivals {start['seq']}..{end['seq']}"
                " (the state and the checkpoint do not belong together)"
            )
        blobs = [(a.name, a.etag, a.size, a.modified) for a in arrivals]
        return _split(blobs, self.options.parallelism)

    def read(self, partition: InputPartition) -> Iterator[tuple[Any, ...]]:
        return _download(self.options, partition)

    def commit(self, end: dict[str, int]) -> None:
        if end["seq"] <= self._state.committed:
            return
        done = self._state.commit(end["seq"])
        if self.options.clean_source != "off":
            self._state.schedule_cleanup(done, due=time.time() + self.options.clean_retention_s)
        self._state.save()
        self._delete_messages([r for a in done for r in a.receipts])
        self._clean_due()

    def stop(self) -> None:
        self._sync_commits()  # the last batch of a run: Spark commits it without telling us
        self._queue = None
        self._state.close()

    def _sync_commits(self) -> None:
        """Catch up with Spark's commit log. Spark calls :meth:`commit` for a batch only when
        it plans the next one, so the last batch before a pause, a stop or the end of a
        ``--once`` run would keep its queue messages; the checkpoint says it is committed."""
        commits = [int(p.name) for p in self._checkpoint.glob("commits/[0-9]*") if p.name.isdigit()]
        if not commits:
            return
        offsets = self._checkpoint / "offsets" / str(max(commits))
        try:
            # Spark's offset log: "v1", the batch metadata, then one line per source.
            end = json.loads(offsets.read_text().splitlines()[2])
        except (OSError, IndexError, ValueError):
            return
        if isinstance(end, dict) and isinstance(end.get("seq"), int):
            self.commit(end)

    # -- landing clean-up --------------------------------------------------------------------

    def _clean_due(self) -> None:
        """Archive or delete the blobs whose clean-up is due (committed batches only). A
        storage error fails the trigger, and what was not done stays due for the restart."""
        if self.options.clean_source == "off":
            return
        due = self._state.cleanup_due(time.time())
        if not due:
            return
        container = self._storage.container(self._location.container)
        archive = (
            BlobLocation.parse(self.options.archive)
            if self.options.clean_source == "archive"
            else None
        )
        for name, etag in due:
            _clean_blob(self._storage, container, self._location, name, etag, archive=archive)
        self._state.cleaned(due)
        self._state.save()

    # -- discovery ---------------------------------------------------------------------------

    def _discover(self) -> None:
        """Find new blobs; the state is written only when this changed it (listing mode runs
        every trigger, and the state holds every key of the retention window)."""
        now = time.time()
        first = self._state.last_listing == 0.0
        offer = self.options.include_existing_files or not first
        listed = first or self.options.discovery == "listing" or self._backfill_due(now)
        if listed:
            self._listing(now, offer=offer)
        if self.options.discovery == "notification":
            self._receive_events()
        # A backfill's time is kept, so a restart does not list again before it is due.
        backfilled = listed and self.options.discovery == "notification"
        if first or backfilled or self._state.changed:
            self._state.save()

    def _backfill_due(self, now: float) -> bool:
        interval = self.options.backfill_interval_s
        return interval is not None and now - self._state.last_listing >= interval

    def _listing(self, now: float, *, offer: bool) -> None:
        self._state.add(self._storage.list_blobs(self._location, self._accept), offer=offer)
        self._state.last_listing = now

    def _queue_client(self) -> Any:
        if self._queue is None:
            self._queue = self._storage.queue(self.options.queue, create=True)
        return self._queue

    def _receive_events(self) -> None:
        queue = self._queue_client()
        received = False
        delete_now: list[list[str]] = []
        for message in queue.receive_messages(
            messages_per_page=32,
            visibility_timeout=_VISIBILITY_TIMEOUT_S,
            max_messages=_MESSAGES_PER_TRIGGER,
        ):
            received = True
            receipt = [message.id, message.pop_receipt]
            holder = self._arrival_for(message.content)
            if holder is None:
                delete_now.append(receipt)  # nothing left to deliver: done with the message
            else:
                self._state.add_receipt(holder, receipt)
        if received:
            # The state (new arrivals, new pop receipts) is saved before any message is deleted.
            self._state.save()
            self._delete_messages(delete_now)

    def _arrival_for(self, text: str) -> Arrival | None:
        """The pending arrival a message announces (created if new), or None when the message
        has nothing to deliver: not an event, another container or prefix, not a photo, a
        blob already offered and committed, or one that no longer exists."""
        events = parse_blob_events(text)
        holder: Arrival | None = None
        for event in events or []:
            if event.container != self._location.container:
                continue
            if not event.name.startswith(self._location.prefix) or not self._accept(event.name):
                continue
            if event.etag and self._state.is_seen(event.name, event.etag):
                holder = self._state.arrival(event.name, event.etag) or holder
                continue
            # The blob's current properties: it may be gone, or rewritten since the event.
            info = self._storage.blob_info(event.container, event.name)
            if info is None:
                continue
            new = self._state.add([info])
            holder = (new[0] if new else self._state.arrival(info.name, info.etag)) or holder
        return holder

    def _delete_messages(self, receipts: list[list[str]]) -> None:
        if not receipts or self.options.discovery != "notification":
            return
        from azure.core.exceptions import HttpResponseError

        queue = self._queue_client()
        for message_id, pop_receipt in receipts:
            # Failing means already deleted, or received again since (a new pop receipt): it
            # then comes back, is recognised as already delivered, and is deleted then.
            with contextlib.suppress(HttpResponseError):
                queue.delete_message(message_id, pop_receipt)


def _clean_blob(
    storage: AzureStorage,
    container: Any,
    landing: BlobLocation,
    name: str,
    etag: str,
    *,
    archive: BlobLocation | None,
) -> None:
    """Archive (download, upload under ``archive`` with the same content settings and
    metadata, then delete) or delete one blob, only as the version the stream read: a blob
    rewritten since is a new arrival, cleaned in its own turn, and one already gone is done."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

    same_version = {"etag": f'"{etag}"', "match_condition": MatchConditions.IfNotModified}
    if archive is not None:
        try:
            download = container.download_blob(name, **same_version)
            content = download.readall()
        except (ResourceNotFoundError, ResourceModifiedError):
            return
        # A failure here (the archive container missing, storage down) fails the trigger.
        target = storage.container(archive.container).get_blob_client(
            archive.child(name.removeprefix(landing.prefix))
        )
        target.upload_blob(
            content,
            overwrite=True,
            content_settings=download.properties.content_settings,
            metadata=download.properties.metadata,
        )
    with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):
        container.delete_blob(name, **same_version)


class BlobDataSource(DataSource):
    """``format("fruits_blob")``, option ``fruits``: :meth:`BlobSourceOptions.to_option`."""

    @classmethod
    def name(cls) -> str:
        return "fruits_blob"

    def schema(self) -> str:
        return BINARY_FILE_SCHEMA

    def reader(self, schema: Any) -> DataSourceReader:
        return BlobBatchReader(BlobSourceOptions.from_options(self.options))

    def streamReader(self, schema: Any) -> DataSourceStreamReader:
        return BlobStreamReader(BlobSourceOptions.from_options(self.options))


def register(spark: SparkSession) -> None:
    spark.dataSource.register(BlobDataSource)


def read_blobs(
    spark: SparkSession,
    location: str,
    images: ImagesConfig,
    azure: AzureConfig | None,
    names: tuple[str, ...] | None = None,
) -> DataFrame:
    """Every photo under an ``az://`` location (or exactly ``names``), as a batch DataFrame.
    Databricks reads ``abfss://`` with ``binaryFile`` instead."""
    register(spark)
    options = BlobSourceOptions(
        location=location,
        azure=azure or AzureConfig(),
        extensions=images.extensions,
        max_photo_bytes=images.max_bytes,
        names=names,
    )
    return spark.read.format("fruits_blob").option("fruits", options.to_option()).load()


def stream_blobs(spark: SparkSession, config: Config, checkpoint: str) -> DataFrame:
    """New blobs under an ``az://`` landing, discovered by listing or by queued events."""
    if is_url(checkpoint):
        raise ConfigError(
            "an az:// landing keeps its discovery state beside the checkpoint, which must be a "
            f"local or mounted folder (paths.checkpoints is {checkpoint})"
        )
    # As for a landing folder: the container exists from the start, empty until uploads come.
    landing = BlobLocation.parse(config.path("landing"))
    AzureStorage(config.azure).container(landing.container, create=True)
    if config.stream.clean_source == "archive":
        archive = BlobLocation.parse(config.path("archive"))
        AzureStorage(config.azure).container(archive.container, create=True)
    stream = config.stream
    backfill = stream.backfill_interval
    retention = stream.clean_source_retention
    options = BlobSourceOptions(
        location=config.path("landing"),
        azure=config.azure,
        extensions=config.images.extensions,
        glob=stream.path_glob,
        max_photo_bytes=config.images.max_bytes,
        checkpoint=checkpoint,
        discovery=stream.discovery,
        queue=stream.queue,
        max_files_per_trigger=stream.max_files_per_trigger,
        max_bytes_per_trigger=stream.max_bytes_per_trigger,
        include_existing_files=stream.include_existing_files,
        max_file_age_s=interval_seconds(stream.max_file_age),
        backfill_interval_s=interval_seconds(backfill) if backfill else None,
        parallelism=task_slots(spark) or 2,
        clean_source=stream.clean_source,
        clean_retention_s=interval_seconds(retention) if retention else 0.0,
        archive=config.path("archive"),
    )
    register(spark)
    return spark.readStream.format("fruits_blob").option("fruits", options.to_option()).load()
