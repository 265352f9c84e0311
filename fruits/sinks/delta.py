"""Delta tables behind one interface, with two writers and one exactly-once contract.

* :class:`~fruits.sinks.delta_rs.DeltaRsLake` (embedded default): delta-rs on the driver;
* :class:`~fruits.sinks.delta_spark.SparkDeltaLake` (Databricks, or delta-spark with its jars):
  Spark's native writer.

An append with a :class:`Txn` commits at most once per (app id, version), whichever the writer.
Both read and write the Arrow schemas of :mod:`fruits.sinks.tables`, and both maintain a table
the same way (:meth:`Lake.maintain`: compaction, vacuum, log checkpoint).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from fruits.config import TOMBSTONE_GRACE_HOURS
from fruits.sinks.tables import SCHEMAS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.config import Config

__all__ = ["Lake", "MaintenancePolicy", "MaintenanceResult", "Since", "Txn", "open_lake"]


# A lower bound on one column: rows where column >= value (``Lake.read``'s ``since``).
Since = tuple[str, dt.datetime]


@dataclass(frozen=True)
class Txn:
    """An idempotency key: the writer commits ``version`` for ``app_id`` at most once."""

    app_id: str
    version: int


@dataclass(frozen=True)
class MaintenancePolicy:
    """How :meth:`Lake.maintain` treats one table (built from the ``maintenance`` config)."""

    target_file_size: int  # bytes: compaction bins small files up to about this size
    vacuum_retention_hours: float  # removed files younger than this are kept (readers)
    log_retention_hours: float = 720.0  # delta.logRetentionDuration
    checkpoint_interval: int = 100  # delta.checkpointInterval
    # The oldest commit a reader still has to open (the Event Hubs outbox: the first version
    # not published yet): the files that commit and later ones added are not vacuumed, nor
    # their log entries cleaned up, however old. None: no such reader.
    keep_from_version: int | None = None
    # Write log_retention_hours / checkpoint_interval into the table's properties where they
    # differ: a metadata commit, which makes a concurrent append fail, so `fruits maintain`
    # does it and the stream's background maintenance does not.
    set_properties: bool = False
    # Also delete orphaned data files (in the table's folder, referenced by no log entry: a
    # crashed writer's), older than the retention and at least an hour (a writer still
    # committing). It lists the whole folder, so maintenance does it now and then.
    full_vacuum: bool = False

    def table_properties(self) -> dict[str, str]:
        """The policy's table properties, as Delta writes them (both writers read these)."""
        return delta_table_properties(
            self.log_retention_hours, self.vacuum_retention_hours, self.checkpoint_interval
        )


def delta_table_properties(
    log_retention_hours: float, vacuum_retention_hours: float, checkpoint_interval: int
) -> dict[str, str]:
    """The table properties of the maintenance policy: how long the log keeps old commits, and
    how often the writer checkpoints it. A new table is created with them (no later metadata
    commit, which would fail the stream's concurrent append); `fruits maintain` (it always
    sets them where they differ) brings older tables in line. Spark's Delta requires the log
    to outlive removed files (logRetentionDuration >= deletedFileRetentionDuration).

    deletedFileRetentionDuration is the vacuum retention plus ``TOMBSTONE_GRACE_HOURS``: it
    says how long checkpoints keep listing a removed file, and vacuum (which deletes at the
    policy's own retention) finds removed files only there."""
    tombstones = vacuum_retention_hours + TOMBSTONE_GRACE_HOURS
    return {
        "delta.logRetentionDuration": f"interval {log_retention_hours:g} hours",
        "delta.deletedFileRetentionDuration": f"interval {tombstones:g} hours",
        "delta.checkpointInterval": str(checkpoint_interval),
    }


@dataclass(frozen=True)
class MaintenanceResult:
    """What :meth:`Lake.maintain` did to one table: a JSON-ready summary."""

    table: str
    version_before: int  # -1: the table does not exist (nothing done)
    version_after: int
    files_before: int  # data files of the latest version
    files_after: int
    bytes_before: int
    bytes_after: int
    files_compacted: int  # small files rewritten (removed) by the compaction
    files_written: int  # files the compaction wrote
    files_vacuumed: int  # removed files deleted from storage (and orphans, when full)
    vacuum_retention_hours: float  # the retention used (the policy's, or longer for a reader)
    checkpoint_version: int | None  # the log's latest checkpoint after maintenance
    # Expired log entries were cleaned up by this call (never while a reader needs them;
    # Spark's writer cleans up at its own checkpoints, by delta.logRetentionDuration).
    log_cleaned: bool
    properties_set: dict[str, str]
    seconds: float
    full_vacuum: bool = False  # this pass also deleted orphaned files (MaintenancePolicy)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Lake(ABC):
    def __init__(
        self,
        root: str,
        *,
        storage_options: dict[str, str] | None = None,
        table_properties: dict[str, str] | None = None,
    ) -> None:
        self.root = root.rstrip("/")
        self.storage_options = storage_options
        # Properties a table gets when this lake creates it (delta_table_properties).
        self.table_properties = table_properties or {}
        # Rows each commit appended, per table (appended_rows): a commit never changes.
        self._commit_rows: dict[str, dict[int, int]] = {}

    def path(self, table: str) -> str:
        return f"{self.root}/{table}"

    @abstractmethod
    def read(
        self,
        spark: SparkSession,
        table: str,
        *,
        columns: list[str] | None = None,
        equals: dict[str, str] | None = None,
        since: Since | None = None,
    ) -> DataFrame:
        """The table (or ``columns`` of it, rows where column == value for each of ``equals``,
        and where column >= value for ``since``) as a Spark DataFrame; empty, with the contract
        schema, if it was not created yet. ``since`` reads only the files whose statistics
        allow a match (Delta's data skipping): recent rows cost the recent files."""

    @abstractmethod
    def read_arrow(
        self,
        table: str,
        *,
        columns: list[str] | None = None,
        equals: dict[str, str] | None = None,
        since: Since | None = None,
    ) -> pa.Table:
        """:meth:`read` onto the driver as Arrow (small reads: status, feature keys)."""

    @abstractmethod
    def files_to_read(self, table: str, since: Since) -> int | None:
        """How many data files a read with ``since`` opens (None: the writer does not say)."""

    @abstractmethod
    def count(self, table: str) -> int:
        """The table's rows, from Delta's file statistics where they exist (no data read)."""

    @abstractmethod
    def latest(self, table: str, column: str) -> Any:
        """The largest value of ``column``, from file statistics where they exist; None for
        an empty or missing table."""

    @abstractmethod
    def replace_arrow(self, data: pa.Table, table: str) -> None:
        """Replace the table's rows by ``data`` in one commit (an overwrite; small tables only:
        the Event Hubs outbox cursor)."""

    @abstractmethod
    def append(self, df: DataFrame, table: str, *, txn: Txn | None = None) -> bool:
        """Append ``df``; with ``txn``, at most once per key. False when nothing was written."""

    @abstractmethod
    def append_arrow(self, data: pa.Table, table: str, *, txn: Txn | None = None) -> bool:
        """:meth:`append` for rows already on the driver (small batches, e.g. features)."""

    @abstractmethod
    def version(self, table: str) -> int:
        """The table's latest Delta version; -1 if it was not created yet."""

    @abstractmethod
    def add_missing_columns(self, table: str) -> list[str]:
        """Bring a table created by an older release up to the contract's schema: columns the
        contract gained since are added (a metadata-only commit; older rows read them as
        null). Returns the names added; nothing to do for a table not created yet."""

    def read_appended(
        self,
        table: str,
        after_version: int,
        *,
        until_version: int | None = None,
        columns: list[str] | None = None,
    ) -> tuple[pa.Table, int]:
        """Rows appended in Delta versions ``(after_version, until_version]`` (default: up to
        the latest), with the version read up to. For append-only tables (``predictions``):
        the Event Hubs outbox reads what is not published yet this way."""
        head = self.version(table)
        until = head if until_version is None else min(until_version, head)
        if until <= after_version:
            empty = self.conform(SCHEMAS[table].empty_table(), table)
            return (empty.select(columns) if columns else empty), max(after_version, until)
        if after_version < 0:
            # Everything up to `until`: that version's own files (an append-only table holds
            # every row ever appended, compacted or not), not every commit's.
            return self._read_version(table, until, columns), until
        return self._read_added(table, after_version, until, columns), until

    def appended_rows(
        self, table: str, after_version: int, *, until_version: int | None = None
    ) -> int:
        """How many rows :meth:`read_appended` would return, from the log alone: the
        ``numRecords`` statistics of the commits' added files, no data file opened (the Event
        Hubs outbox counts what waits at every pass, an outage's backlog included). A file
        written without statistics is counted by reading it."""
        head = self.version(table)
        until = head if until_version is None else min(until_version, head)
        if until <= after_version:
            return 0
        if after_version < 0 and until == head:
            return self.count(table)  # the latest snapshot's statistics
        counted = self._appended_rows(table, max(after_version, -1), until)
        if counted is None:
            rows, _ = self.read_appended(
                table, after_version, until_version=until, columns=[SCHEMAS[table].names[0]]
            )
            return int(rows.num_rows)
        return counted

    @abstractmethod
    def _appended_rows(self, table: str, after_version: int, until_version: int) -> int | None:
        """The ``numRecords`` of the files that the commits ``after_version + 1 ..
        until_version`` added as new data (``dataChange``), from their log entries; None when
        one of those files has no statistics."""

    @abstractmethod
    def _read_version(self, table: str, version: int, columns: list[str] | None) -> pa.Table:
        """The table as of ``version`` (time travel), cast to the contract schema."""

    @abstractmethod
    def _read_added(
        self, table: str, after_version: int, until_version: int, columns: list[str] | None
    ) -> pa.Table:
        """The rows that the commits ``after_version + 1 .. until_version`` appended (their
        add actions with ``dataChange``: not a compaction's rewrite), cast to the contract
        schema."""

    # --- maintenance ---------------------------------------------------------------------

    def maintain(self, table: str, policy: MaintenancePolicy) -> MaintenanceResult:
        """Compact the table's small files, vacuum the files removed long enough ago, write a
        log checkpoint and clean up expired log entries, keeping what ``policy`` protects.

        Safe beside a running stream: compaction conflicts with no blind append (Delta's
        optimistic concurrency: the appends keep committing, and so does the compaction), and
        its files are marked ``dataChange=false``, which :meth:`read_appended` skips."""
        started = time.perf_counter()
        before = self.version(table)
        if before < 0:  # not created yet: nothing to do
            return MaintenanceResult(
                table=table,
                version_before=-1,
                version_after=-1,
                files_before=0,
                files_after=0,
                bytes_before=0,
                bytes_after=0,
                files_compacted=0,
                files_written=0,
                files_vacuumed=0,
                vacuum_retention_hours=policy.vacuum_retention_hours,
                checkpoint_version=None,
                log_cleaned=False,
                properties_set={},
                seconds=0.0,
            )
        files_before, bytes_before = self._live_files(table)
        properties = self._set_properties(table, policy) if policy.set_properties else {}
        start = self.version(table)
        compacted, written = self._compact(table, policy.target_file_size)
        # The compaction's own commit, when nothing else committed since `start`: it was
        # built on `start`, so it removed only files that versions up to `start` added.
        own = start + 1 if compacted and self.version(table) == start + 1 else None
        retention, clean_logs = self._retention(table, policy, own_commit=own)
        vacuumed = self._vacuum(table, retention)
        if policy.full_vacuum:
            # Orphans are judged by their age alone: at least an hour, so a file that a
            # writer is still committing is never one of them.
            vacuumed += self._vacuum(table, max(retention, 1.0), full=True)
        checkpoint, cleaned = self._checkpoint(table, clean_logs=clean_logs)
        files_after, bytes_after = self._live_files(table)
        return MaintenanceResult(
            table=table,
            version_before=before,
            version_after=self.version(table),
            files_before=files_before,
            files_after=files_after,
            bytes_before=bytes_before,
            bytes_after=bytes_after,
            files_compacted=compacted,
            files_written=written,
            files_vacuumed=vacuumed,
            vacuum_retention_hours=retention,
            checkpoint_version=checkpoint,
            log_cleaned=cleaned,
            properties_set=properties,
            seconds=round(time.perf_counter() - started, 3),
            full_vacuum=policy.full_vacuum,
        )

    def _retention(
        self, table: str, policy: MaintenancePolicy, *, own_commit: int | None = None
    ) -> tuple[float, bool]:
        """(vacuum retention in hours, whether expired log entries may be cleaned up).

        A file that a protected commit (``keep_from_version`` or later) added was removed
        after that commit was made; a retention longer than that commit's age keeps it, and
        the log entries it is read from are kept while it is older than the log retention.
        ``own_commit``, this pass's compaction built on the version before it, removed only
        files of older commits: as the first protected commit, it protects nothing."""
        retention = float(policy.vacuum_retention_hours)
        keep = policy.keep_from_version
        if keep is not None and keep == own_commit:
            keep += 1
        if keep is None or keep > self.version(table):
            return retention, True
        made_at = self._commit_timestamp(table, keep)
        if made_at is None:  # its log entry is gone: nothing left to protect
            return retention, True
        age_hours = (dt.datetime.now(dt.UTC) - made_at).total_seconds() / 3600
        # One hour more than its age: clocks of writers and this machine may disagree a little.
        retention = max(retention, float(math.ceil(age_hours + 1)))
        return retention, age_hours + 1 < policy.log_retention_hours

    @abstractmethod
    def _live_files(self, table: str) -> tuple[int, int]:
        """(number, total bytes) of the data files of the latest version."""

    @abstractmethod
    def _set_properties(self, table: str, policy: MaintenancePolicy) -> dict[str, str]:
        """Set the policy's log retention and checkpoint interval as table properties where
        they differ; returns those set."""

    @abstractmethod
    def _compact(self, table: str, target_file_size: int) -> tuple[int, int]:
        """Bin small files into files of about ``target_file_size`` bytes (a commit of
        ``dataChange=false`` actions); (files removed, files added)."""

    @abstractmethod
    def _vacuum(self, table: str, retention_hours: float, *, full: bool = False) -> int:
        """Delete files removed from the table more than ``retention_hours`` ago (with
        ``full``, also the files no log entry references, older than that); how many."""

    @abstractmethod
    def _checkpoint(self, table: str, *, clean_logs: bool) -> tuple[int | None, bool]:
        """Make sure the log has a recent checkpoint (and, with ``clean_logs``, drop the log
        entries older than the log retention): (the latest checkpoint's version, whether log
        entries were cleaned up)."""

    @abstractmethod
    def _commit_timestamp(self, table: str, version: int) -> dt.datetime | None:
        """When ``version`` was committed (its commitInfo); None if its log entry is gone."""

    def conform(self, data: pa.Table, table: str, *, partial: bool = False) -> pa.Table:
        """Select and cast to the contract schema, so both writers store the same types.

        With ``partial``, a projection (some of the columns) is cast to those columns."""
        schema = SCHEMAS[table]
        if partial:
            schema = pa.schema([f for f in schema if f.name in data.column_names])
        missing = set(schema.names) - set(data.column_names)
        if missing:
            raise ValueError(f"table {table}: columns missing from the data: {sorted(missing)}")
        return data.select(schema.names).cast(schema)


def open_lake(config: Config) -> Lake:
    """The configured lake: delta-rs on a folder or on ``az://`` (with the account's
    credentials), or Spark's native Delta writer (``spark.delta_writer: spark``), which reads
    an ``az://`` lake through Hadoop's ``abfs`` driver."""
    root = config.path("lake")
    maintenance = config.maintenance
    properties = delta_table_properties(
        maintenance.log_retention_hours,
        maintenance.vacuum_retention_hours,
        maintenance.checkpoint_interval,
    )
    storage = None
    if root.startswith("az://"):
        from fruits.azure import AzureStorage, BlobLocation

        storage = AzureStorage(config.azure)
        storage.container(BlobLocation.parse(root).container, create=True)  # neither writer will
    if config.spark.delta_writer == "spark":
        from fruits.sinks.delta_spark import SparkDeltaLake
        from fruits.spark import get_spark

        # The session the job already started (getOrCreate), or a new one: `fruits status`.
        return SparkDeltaLake(
            storage.hadoop_url(root) if storage else root,
            get_spark(config),
            table_properties=properties,
        )
    from fruits.sinks.delta_rs import DeltaRsLake

    options = storage.delta_storage_options() if storage else None
    return DeltaRsLake(root, storage_options=options, table_properties=properties)
