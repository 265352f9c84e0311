"""Delta tables behind one interface, with two writers and one exactly-once contract.

* :class:`~fruits.sinks.delta_rs.DeltaRsLake` (embedded default): delta-rs on the driver;
* :class:`~fruits.sinks.delta_spark.SparkDeltaLake` (Databricks, or delta-spark with its jars):
  Spark's native writer.

An append with a :class:`Txn` commits at most once per (app id, version), whichever the writer.
Both read and write the Arrow schemas of :mod:`fruits.sinks.tables`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from fruits.sinks.tables import SCHEMAS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.config import Config

__all__ = ["Lake", "Txn", "open_lake"]


@dataclass(frozen=True)
class Txn:
    """An idempotency key: the writer commits ``version`` for ``app_id`` at most once."""

    app_id: str
    version: int


class Lake(ABC):
    def __init__(self, root: str, *, storage_options: dict[str, str] | None = None) -> None:
        self.root = root.rstrip("/")
        self.storage_options = storage_options

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
    ) -> DataFrame:
        """The table (or ``columns`` of it, rows where column == value for each of ``equals``)
        as a Spark DataFrame; empty, with the contract schema, if it was not created yet."""

    @abstractmethod
    def read_arrow(
        self,
        table: str,
        *,
        columns: list[str] | None = None,
        equals: dict[str, str] | None = None,
    ) -> pa.Table:
        """:meth:`read` onto the driver as Arrow (small reads: status, feature keys)."""

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
        return self._read_added(table, after_version, until, columns), until

    @abstractmethod
    def _read_added(
        self, table: str, after_version: int, until_version: int, columns: list[str] | None
    ) -> pa.Table:
        """The rows of the data files present at ``until_version`` and absent at
        ``after_version`` (-1: none), cast to the contract schema."""

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
    storage = None
    if root.startswith("az://"):
        from fruits.azure import AzureStorage, BlobLocation

        storage = AzureStorage(config.azure)
        storage.container(BlobLocation.parse(root).container, create=True)  # neither writer will
    if config.spark.delta_writer == "spark":
        from fruits.sinks.delta_spark import SparkDeltaLake
        from fruits.spark import get_spark

        # The session the job already started (getOrCreate), or a new one: `fruits status`.
        return SparkDeltaLake(storage.hadoop_url(root) if storage else root, get_spark(config))
    from fruits.sinks.delta_rs import DeltaRsLake

    options = storage.delta_storage_options() if storage else None
    return DeltaRsLake(root, storage_options=options)
