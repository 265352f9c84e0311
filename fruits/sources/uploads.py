"""``format("fruits_uploads")``: photos uploaded to a landing, a folder or a Blob container, as a
Spark source, batch or streaming.

Rows have the ``binaryFile`` schema (path, modificationTime, length, content) plus ``error``
(why a listed file could not be read, else null), so the jobs treat every source alike. It is the
landing of every environment but Databricks, where Auto Loader (``cloudFiles``) does the same job
(:mod:`fruits.sources.autoloader`). The landing's storage is a
:class:`~fruits.sources.stores.LandingStore`: a folder (the embedded default) or Blob (``az://``,
``abfs[s]://``, through the Blob SDK).

* batch (``spark.read``): every photo under the location, e.g. ``fruits train --data az://``;
* streaming (``spark.readStream``), Auto Loader-style, in one of two discovery modes:

  - ``listing``: each trigger lists the landing and offers files it has not offered before;
  - ``notification`` (Blob): each trigger reads ``Microsoft.Storage.BlobCreated`` events (Event
    Grid's schema) from a Storage Queue, so its cost grows with the new photos, not the
    container; a listing pass every ``backfill_interval`` catches events that were lost. A
    message is deleted only once the micro-batch holding its blob is committed.

  With ``clean_source`` (Auto Loader's ``cleanSource``), the files of a committed micro-batch
  are archived (moved under ``archive``; on Blob a server-side copy, then a delete) or deleted
  once ``clean_retention_s`` has passed since that commit; only the version that was read,
  never a rewrite.

No upload can fail a micro-batch: names are data (never a Hadoop ``Path`` or URI), a file over
``max_photo_bytes`` by its listed size is not read at all (``content`` null, the step
quarantines it as too large), and a file that cannot be read has its error in ``error``.

The streaming offset is a sequence number in a :class:`~fruits.sources.discovery.DiscoveryState`
kept in the query's checkpoint (``state`` option), so a replayed micro-batch reads exactly the
same files and a file version is offered once. ``SupportsTriggerAvailableNow`` gives ``--once``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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
from fruits.sources.schema import UPLOAD_SCHEMA
from fruits.sources.stores import LandingStore, ReadFailed, landing_store
from fruits.spark import task_slots

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.config import Config, ImagesConfig

__all__ = [
    "UploadSourceOptions",
    "UploadsDataSource",
    "read_uploads",
    "register",
    "stream_uploads",
]

# A received event stays invisible this long; a batch is normally committed well before, and if
# not, the message comes back, is recognised as already offered, and deleted then.
_VISIBILITY_TIMEOUT_S = 900
_MESSAGES_PER_TRIGGER = 1000


# Archive copies and deletes of a trigger's clean-up run this many at a time (each one request).
_CLEANERS = 8


@dataclass(frozen=True)
class UploadSourceOptions:
    """Everything the source needs, passed through Spark as one JSON option (no secrets)."""

    location: str  # the landing: a folder, az:// or abfs[s]://
    azure: AzureConfig
    extensions: tuple[str, ...]
    glob: str | None = None
    max_photo_bytes: int = 20_000_000
    names: tuple[str, ...] | None = None  # batch: exactly these files instead of a listing
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
    clean_retention_s: float = 0.0  # after the commit of the file's batch
    archive: str = ""  # where archived files go (their names relative to the landing)

    def to_option(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> UploadSourceOptions:
        raw = json.loads(options["fruits"])
        raw["azure"] = AzureConfig(**raw["azure"])
        raw["extensions"] = tuple(raw["extensions"])
        raw["names"] = tuple(raw["names"]) if raw["names"] is not None else None
        return cls(**raw)


# (name, etag or None for "whatever is there", size or None when not listed, modified epoch s)
_File = tuple[str, str | None, int | None, float]


class _Files(InputPartition):
    """Files one Spark task reads."""

    def __init__(self, files: list[_File]) -> None:
        self.files = files


def _split(files: Sequence[_File], parts: int) -> list[_Files]:
    parts = max(1, min(parts, len(files)))
    return [_Files(list(files[i::parts])) for i in range(parts)] if files else []


def _read(
    options: UploadSourceOptions, partition: InputPartition, *, streaming: bool
) -> Iterator[tuple[Any, ...]]:
    """Rows for the files of one partition; none of them raises for one file's sake.

    * gone or rewritten since it was discovered: ``content`` null (quarantined as ``missing``);
    * over the photo limit by its listed size: not read at all in a stream (``unread_reason``
      ``too_large_bytes``); a batch read takes one byte over the limit, for the decoder;
    * unreadable (permissions, an I/O error, a 4xx from storage): ``unread_reason``
      ``unreadable`` and the error.

    A failure of the storage itself (connection refused, 5xx after the SDK's retries) raises:
    the micro-batch fails and its replay reads the same files once storage is back."""
    assert isinstance(partition, _Files)
    store = landing_store(options.location, options.azure)
    limit = options.max_photo_bytes + 1
    for name, etag, size, modified in partition.files:
        url = store.url(name)
        when = utc(modified)
        if streaming and size is not None and size > options.max_photo_bytes:
            detail = f"{size} bytes > {options.max_photo_bytes} (by its listed size; not read)"
            yield (url, when, size, None, "too_large_bytes", detail)
            continue
        try:
            content = store.read(name, etag, limit)
        except ReadFailed as exc:
            yield (url, when, size or 0, None, "unreadable", str(exc))
            continue
        yield (url, when, size if size is not None else len(content or b""), content, None, None)


class UploadsBatchReader(DataSourceReader):
    def __init__(self, options: UploadSourceOptions) -> None:
        self.options = options

    def partitions(self) -> Sequence[InputPartition]:
        files: list[_File]
        if self.options.names is not None:
            files = [(name, None, None, 0.0) for name in self.options.names]
        else:
            store = landing_store(self.options.location, self.options.azure)
            accept = NameFilter(self.options.extensions, self.options.glob, under=store.prefix)
            files = [
                (f.name, f.etag, f.size, f.last_modified.timestamp()) for f in store.list(accept)
            ]
        # About 64 photos per task: enough tasks to spread the reads over the cluster.
        return _split(files, max(1, len(files) // 64))

    def read(self, partition: InputPartition) -> Iterator[tuple[Any, ...]]:
        return _read(self.options, partition, streaming=False)


class UploadsStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Runs in Spark's source-planning Python process (discovery, offsets, commits); only
    :meth:`read` runs in the executors, on a pickled copy without clients or state."""

    def __init__(self, options: UploadSourceOptions) -> None:
        self.options = options
        self._store: LandingStore = landing_store(options.location, options.azure)
        self._accept = NameFilter(options.extensions, options.glob, under=self._store.prefix)
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
        files: list[_File] = [(a.name, a.etag, a.size, a.modified) for a in arrivals]
        return _split(files, self.options.parallelism)

    def read(self, partition: InputPartition) -> Iterator[tuple[Any, ...]]:
        return _read(self.options, partition, streaming=True)

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
        """Archive or delete the files whose clean-up is due (committed batches only), a few at
        a time. A storage error fails the trigger, and what was not done stays due."""
        if self.options.clean_source == "off":
            return
        due = self._state.cleanup_due(time.time())
        if not due:
            return
        archive = self.options.archive if self.options.clean_source == "archive" else None
        with ThreadPoolExecutor(_CLEANERS) as pool:
            # list(): the first error (storage down) is raised here, failing the trigger.
            list(pool.map(lambda key: self._store.clean(key[0], key[1], archive), due))
        self._state.cleaned(due)
        self._state.save()

    # -- discovery ---------------------------------------------------------------------------

    def _discover(self) -> None:
        """Find new files; the state is written only when this changed it (listing mode runs
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
        self._state.add(self._store.list(self._accept), offer=offer)
        self._state.last_listing = now

    def _queue_client(self) -> Any:
        if self._queue is None:
            storage = AzureStorage(self.options.azure)
            self._queue = storage.queue(self.options.queue, create=True)
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
        container = BlobLocation.parse(self.options.location).container
        for event in events or []:
            if event.container != container:
                continue
            if not event.name.startswith(self._store.prefix) or not self._accept(event.name):
                continue
            if event.etag and self._state.is_seen(event.name, event.etag):
                holder = self._state.arrival(event.name, event.etag) or holder
                continue
            # The blob's current properties: it may be gone, or rewritten since the event.
            info = self._store.info(event.name)
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


class UploadsDataSource(DataSource):
    """``format("fruits_uploads")``, option ``fruits``: :meth:`UploadSourceOptions.to_option`."""

    @classmethod
    def name(cls) -> str:
        return "fruits_uploads"

    def schema(self) -> str:
        return UPLOAD_SCHEMA

    def reader(self, schema: Any) -> DataSourceReader:
        return UploadsBatchReader(UploadSourceOptions.from_options(self.options))

    def streamReader(self, schema: Any) -> DataSourceStreamReader:
        return UploadsStreamReader(UploadSourceOptions.from_options(self.options))


def register(spark: SparkSession) -> None:
    spark.dataSource.register(UploadsDataSource)


def read_uploads(
    spark: SparkSession,
    location: str,
    images: ImagesConfig,
    azure: AzureConfig | None,
    names: tuple[str, ...] | None = None,
) -> DataFrame:
    """Every photo under a location (or exactly ``names``), as a batch DataFrame of the
    ``binaryFile`` schema. Databricks reads ``abfss://`` with ``binaryFile`` instead."""
    register(spark)
    options = UploadSourceOptions(
        location=location,
        azure=azure or AzureConfig(),
        extensions=images.extensions,
        max_photo_bytes=images.max_bytes,
        names=names,
    )
    df = spark.read.format("fruits_uploads").option("fruits", options.to_option()).load()
    return df.select("path", "modificationTime", "length", "content")


def stream_uploads(spark: SparkSession, config: Config, checkpoint: str) -> DataFrame:
    """New photos in ``paths.landing`` (a folder or Blob), by listing or by queued events."""
    if is_url(checkpoint):
        raise ConfigError(
            "the landing's discovery state is kept beside the checkpoint, which must be a "
            f"local or mounted folder (paths.checkpoints is {checkpoint})"
        )
    landing = config.path("landing")
    stream = config.stream
    blob = is_url(landing)
    # As for a landing folder: the container exists from the start, empty until uploads come.
    if blob:
        storage = AzureStorage(config.azure)
        storage.container(BlobLocation.parse(landing).container, create=True)
        if stream.clean_source == "archive":
            storage.container(BlobLocation.parse(config.path("archive")).container, create=True)
    else:
        Path(landing).mkdir(parents=True, exist_ok=True)
    backfill = stream.backfill_interval
    retention = stream.clean_source_retention
    options = UploadSourceOptions(
        location=landing,
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
    return spark.readStream.format("fruits_uploads").option("fruits", options.to_option()).load()
