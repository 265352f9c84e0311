"""delta-rs (``deltalake``) on the driver: the embedded default, on a folder or ``az://``.

An idempotent append records ``Transaction(app_id, version)`` in the same commit and is skipped
when ``transaction_version(app_id)`` is already at or past that version (delta-rs does not skip
it by itself).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pa_fs

from fruits.sinks.delta import Lake, MaintenancePolicy, Since, Txn
from fruits.sinks.tables import SCHEMAS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["DeltaRsLake"]

# Commit conflicts retried on a fresh snapshot (a racer's commit of the same app id, a metadata
# change): delta-rs itself already retries the conflicts a blind append can rebase over.
_COMMIT_ATTEMPTS = 3


class DeltaRsLake(Lake):
    """delta-rs on the driver: the embedded default and ``az://`` on Blob storage."""

    def _table(self, table: str):  # type: ignore[no-untyped-def]
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.path(table), storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def read_arrow(
        self,
        table: str,
        *,
        columns: list[str] | None = None,
        equals: dict[str, str] | None = None,
        since: Since | None = None,
    ) -> pa.Table:
        delta = self._table(table)
        if delta is None:
            empty = SCHEMAS[table].empty_table()
            return empty.select(columns) if columns else empty
        condition = _condition(table, equals, since)
        files = _files_since(delta, since) if since is not None else None
        if files is not None:
            # Only the files whose statistics say they can hold rows that recent, read as plain
            # Parquet: building delta-rs' dataset costs time per live file of the table, and a
            # stream leaves hundreds of small ones between two compactions.
            schema = pa.schema(delta.schema().to_arrow())
            recent = ds.dataset(files, schema=schema, format="parquet", filesystem=self._fs(table))
            data = recent.to_table(columns=columns, filter=condition)
            del recent, delta
            return data
        # delta-rs gives each fragment its file's statistics as a guarantee: the filter skips
        # the files that cannot match without opening them.
        dataset = delta.to_pyarrow_dataset()
        data = dataset.to_table(columns=columns, filter=condition)
        # Free the scanner now, not in interpreter teardown where its threads can abort the
        # process ("terminate called without an active exception", delta-rs #2184).
        del dataset, delta
        return data

    def files_to_read(self, table: str, since: Since) -> int | None:
        delta = self._table(table)
        if delta is None:
            return 0
        files = _files_since(delta, since)
        if files is not None:
            return len(files)
        dataset = delta.to_pyarrow_dataset()
        count = len(list(dataset.get_fragments(filter=_condition(table, None, since))))
        del dataset, delta
        return count

    def count(self, table: str) -> int:
        delta = self._table(table)
        if delta is None:
            return 0
        actions = pa.table(delta.get_add_actions(flatten=True))
        counts = actions.column("num_records")
        if counts.null_count:  # a file written without statistics: count its rows
            return int(delta.to_pyarrow_dataset().count_rows())
        return int(pc.sum(counts).as_py() or 0)

    def latest(self, table: str, column: str) -> Any:
        delta = self._table(table)
        if delta is None:
            return None
        actions = pa.table(delta.get_add_actions(flatten=True))
        stats = f"max.{column}"
        if stats not in actions.column_names or actions.column(stats).null_count:
            values = self.read_arrow(table, columns=[column]).column(column)
            return pc.max(values).as_py()
        return pc.max(actions.column(stats)).as_py()

    def replace_arrow(self, data: pa.Table, table: str) -> None:
        from deltalake import write_deltalake

        write_deltalake(
            self.path(table),
            self.conform(data, table),
            mode="overwrite",
            storage_options=self.storage_options,
        )

    def read(
        self,
        spark: SparkSession,
        table: str,
        *,
        columns: list[str] | None = None,
        equals: dict[str, str] | None = None,
        since: Since | None = None,
    ) -> DataFrame:
        data = self.read_arrow(table, columns=columns, equals=equals, since=since)
        data = self.conform(data, table, partial=True)
        if not data.num_rows:  # Spark Connect infers no schema from an empty table
            from pyspark.sql.pandas.types import from_arrow_schema

            return spark.createDataFrame(data, schema=from_arrow_schema(data.schema))
        return spark.createDataFrame(data)

    def append(self, df: DataFrame, table: str, *, txn: Txn | None = None) -> bool:
        return self.append_arrow(df.toArrow(), table, txn=txn)

    def append_arrow(self, data: pa.Table, table: str, *, txn: Txn | None = None) -> bool:
        """The app transaction is checked on the snapshot the commit is then built on, so
        delta-rs' conflict check sees any commit made in between: a racing writer's commit of
        the same app id fails this one ("Concurrent transaction failed"), and so does a
        concurrent metadata change (``fruits maintain`` setting table properties). A failed
        commit wrote nothing: it is tried again on a fresh snapshot, where a version the racer
        committed is skipped. So two writers racing on one (app id, version) commit one set
        of rows, and each says truthfully whether it wrote."""
        from deltalake.exceptions import CommitFailedError

        if data.num_rows == 0:
            return False
        rows = self.conform(data, table)
        for attempt in range(_COMMIT_ATTEMPTS):
            try:
                return self._append_once(rows, table, txn)
            except CommitFailedError:  # a conflict; storage errors are not retried here
                if attempt == _COMMIT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _append_once(self, rows: pa.Table, table: str, txn: Txn | None) -> bool:
        from deltalake import CommitProperties, Transaction, write_deltalake

        delta = self._table(table)
        if txn is not None and delta is not None and _txn_version(delta, txn.app_id) >= txn.version:
            return False  # a replayed batch (or a racer's): this version is in the table
        properties = None
        if txn is not None:
            properties = CommitProperties(
                app_transactions=[Transaction(app_id=txn.app_id, version=txn.version)]
            )
        if delta is None:
            # Created in a commit of its own (as Spark's writer does), so the data's commit
            # is always built on a snapshot: a creation carrying data would be rebased over a
            # racer's creation without any check of the app transaction.
            delta = self._create(table)
            if txn is not None and _txn_version(delta, txn.app_id) >= txn.version:
                return False
        write_deltalake(delta, rows, mode="append", commit_properties=properties)
        return True

    def _create(self, table: str):  # type: ignore[no-untyped-def]
        """The table with the contract's schema and no rows (if a racer has not made it)."""
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError

        with contextlib.suppress(DeltaError):  # a racer created it between the two calls
            DeltaTable.create(
                self.path(table),
                schema=SCHEMAS[table],
                mode="ignore",
                # The maintenance policy's log and vacuum retentions, checkpoint interval.
                configuration=self.table_properties or None,
                storage_options=self.storage_options,
            )
        return self._table(table)

    def version(self, table: str) -> int:
        delta = self._table(table)
        return -1 if delta is None else int(delta.version())

    def add_missing_columns(self, table: str) -> list[str]:
        from deltalake.schema import Field

        delta = self._table(table)
        if delta is None:
            return []
        present = set(delta.schema().to_arrow().names)
        missing = [f for f in SCHEMAS[table] if f.name not in present]
        if missing:
            delta.alter.add_columns([Field.from_arrow(f.with_nullable(True)) for f in missing])
        return [f.name for f in missing]

    def _read_added(
        self, table: str, after_version: int, until_version: int, columns: list[str] | None
    ) -> pa.Table:
        # The files that the commits after_version+1..until_version added as new data, read
        # from those commits' own log entries (as Spark's writer does): a file since rewritten
        # by a compaction is still read (vacuum keeps it, Lake.maintain), and the compaction's
        # own files (dataChange=false) are not, so no row is published twice. The change data
        # feed (load_cdf) would do the same, but delta-rs refuses it for version 0 without
        # delta.enableChangeDataFeed.
        names: list[str] = []
        for version in range(after_version + 1, until_version + 1):
            for action in self._commit_actions(table, version):
                add = action.get("add")
                if add is not None and add.get("dataChange", True):
                    names.append(unquote(add["path"]))  # the protocol URL-encodes paths
        dataset = self._at(table, until_version).to_pyarrow_dataset()
        appended = ds.dataset(
            sorted(set(names)), schema=dataset.schema, format="parquet", filesystem=self._fs(table)
        ).to_table(columns=columns)
        del dataset  # free delta-rs' threads now (see read_arrow)
        return self.conform(appended, table, partial=columns is not None)

    def _appended_rows(self, table: str, after_version: int, until_version: int) -> int | None:
        # A commit never changes: its count is kept (an outage's backlog is counted at every
        # pass, each commit's log entry read once), and forgotten once the outbox moved past.
        cache = self._commit_rows.setdefault(table, {})
        for version in [v for v in cache if v <= after_version]:
            del cache[version]
        total = 0
        for version in range(after_version + 1, until_version + 1):
            if version not in cache:
                rows = 0
                for action in self._commit_actions(table, version):
                    add = action.get("add")
                    if add is None or not add.get("dataChange", True):
                        continue
                    records = json.loads(add.get("stats") or "{}").get("numRecords")
                    if records is None:  # written without statistics: read it instead
                        return None
                    rows += int(records)
                cache[version] = rows
            total += cache[version]
        return total

    def _read_version(self, table: str, version: int, columns: list[str] | None) -> pa.Table:
        dataset = self._at(table, version).to_pyarrow_dataset()
        data = dataset.to_table(columns=columns)
        del dataset  # free delta-rs' threads now (see read_arrow)
        return self.conform(data, table, partial=columns is not None)

    def _fs(self, table: str) -> pa_fs.FileSystem:
        """The table's folder as a pyarrow filesystem: pyarrow's own for a local folder (C++,
        no Python call per read), else delta-rs' (az://)."""
        location = self.path(table)
        if "://" not in location or location.startswith("file://"):
            folder = os.path.abspath(unquote(location.removeprefix("file://")))
            return pa_fs.SubTreeFileSystem(folder, pa_fs.LocalFileSystem())
        from deltalake.fs import DeltaStorageHandler

        return pa_fs.PyFileSystem(DeltaStorageHandler(location, self.storage_options))

    def _commit_actions(self, table: str, version: int) -> list[dict[str, Any]]:
        """The actions of one commit, from its log entry (FileNotFoundError once cleaned up:
        keep maintenance.log_retention_hours longer than any Event Hubs outage)."""
        with self._fs(table).open_input_stream(f"_delta_log/{version:020d}.json") as entry:
            text = entry.read().decode()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def _at(self, table: str, version: int):  # type: ignore[no-untyped-def]
        from deltalake import DeltaTable

        return DeltaTable(self.path(table), version=version, storage_options=self.storage_options)

    # --- maintenance (Lake.maintain) -------------------------------------------------------

    def _live_files(self, table: str) -> tuple[int, int]:
        actions = pa.table(self._table(table).get_add_actions(flatten=True))
        return actions.num_rows, int(pc.sum(actions.column("size_bytes")).as_py() or 0)

    def _set_properties(self, table: str, policy: MaintenancePolicy) -> dict[str, str]:
        delta = self._table(table)
        wanted = policy.table_properties()
        current = delta.metadata().configuration
        changed = {k: v for k, v in wanted.items() if current.get(k) != v}
        if changed:
            delta.alter.set_table_properties(changed)
        return changed

    def _compact(self, table: str, target_file_size: int) -> tuple[int, int]:
        metrics = self._table(table).optimize.compact(target_size=target_file_size)
        return int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"])

    def _vacuum(self, table: str, retention_hours: float, *, full: bool = False) -> int:
        # Not "full" at every pass: it lists the whole folder and judges the files no log
        # entry references by their age alone (Lake.maintain gives it at least an hour, so a
        # file a writer is still committing is kept). The others delete tombstones only.
        deleted = self._table(table).vacuum(
            retention_hours=math.ceil(retention_hours),
            dry_run=False,
            enforce_retention_duration=False,  # the policy's retention is the one that counts
            full=full,
        )
        return len(deleted)

    def _checkpoint(self, table: str, *, clean_logs: bool) -> tuple[int | None, bool]:
        delta = self._table(table)
        if _last_checkpoint(self._fs(table)) != delta.version():
            delta.create_checkpoint()
        if clean_logs:
            delta.cleanup_metadata()  # entries older than delta.logRetentionDuration
        return _last_checkpoint(self._fs(table)), clean_logs

    def _commit_timestamp(self, table: str, version: int) -> dt.datetime | None:
        try:
            actions = self._commit_actions(table, version)
        except FileNotFoundError:
            return None
        for action in actions:
            if "commitInfo" in action and "timestamp" in action["commitInfo"]:
                stamp = int(action["commitInfo"]["timestamp"])
                return dt.datetime.fromtimestamp(stamp / 1000, dt.UTC)
        return None


def _txn_version(delta: Any, app_id: str) -> int:
    """The last version committed for ``app_id`` in this snapshot; -1 if none."""
    version = delta.transaction_version(app_id)
    return -1 if version is None else int(version)


def _last_checkpoint(fs: pa_fs.FileSystem) -> int | None:
    try:
        with fs.open_input_stream("_delta_log/_last_checkpoint") as handle:
            return int(json.loads(handle.read().decode())["version"])
    except FileNotFoundError:
        return None


def _files_since(delta: Any, since: Since) -> list[str] | None:
    """The live files whose statistics allow a row at or after ``since`` (a file without them
    is kept), from the log's add actions; None when the table keeps no statistics of that
    column (then only a scan can tell)."""
    column, start = since
    actions = pa.table(delta.get_add_actions(flatten=True))
    stats = f"max.{column}"
    if stats not in actions.column_names:
        return None
    newest = actions.column(stats)
    keep = pc.or_kleene(
        pc.is_null(newest), pc.greater_equal(newest, pa.scalar(start, type=newest.type))
    )
    return [unquote(p) for p in actions.filter(keep).column("path").to_pylist()]


def _condition(
    table: str, equals: dict[str, str] | None, since: Since | None
) -> pc.Expression | None:
    condition = None
    for column, value in (equals or {}).items():
        term = pc.field(column) == value
        condition = term if condition is None else condition & term
    if since is not None:
        column, start = since
        # The contract's type: comparing a timestamp column to a scalar of another unit
        # or zone would not prune by the statistics.
        term = pc.field(column) >= pa.scalar(start, type=SCHEMAS[table].field(column).type)
        condition = term if condition is None else condition & term
    return condition
