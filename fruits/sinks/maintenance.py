"""Delta maintenance of the lake's tables: what to keep, and when the stream runs it.

Each micro-batch appends one small file per table: about 86,000 a day at one batch a second,
and every read (``fruits status``, the Event Hubs outbox, analysts' queries) slows down with
them. :meth:`~fruits.sinks.delta.Lake.maintain` compacts them, vacuums the files removed long
enough ago and checkpoints the log; this module decides its policy per table and runs it:

* ``fruits maintain`` (and the bundle's scheduled job): :func:`maintain_lake`, once;
* ``fruits stream``: :class:`BackgroundMaintenance`, a driver-side thread that runs it every
  ``maintenance.every_batches`` micro-batches or ``every_minutes`` minutes, never twice at once
  and never on a batch's path (the step's appends go on while it compacts: Delta's optimistic
  concurrency lets blind appends and a compaction both commit).

What maintenance must not remove: the files and log entries of ``predictions`` that the Event
Hubs outbox has not published yet (it reads them by Delta version, files since compacted
included), whatever their age. Every process that vacuums knows it from the same two sources:
the configuration (``eventhub.enabled``, ``eventhub.backfill``) and the ``eventhub_outbox``
table, so the stream, ``fruits maintain`` and the bundle's job protect the same commits.

Now and then (``maintenance.full_vacuum_every``: a process's first pass and every Nth after
it, so each run of ``fruits maintain``) the vacuum is a full one, which also deletes orphaned
data files: files in a table's folder that no log entry references (a crashed writer's).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from fruits.config import Config
from fruits.console import log as console_log
from fruits.sinks.delta import Lake, MaintenancePolicy, MaintenanceResult, open_lake
from fruits.sinks.tables import PREDICTIONS, SCHEMAS

__all__ = ["BackgroundMaintenance", "maintain_lake", "maintenance_policy"]

_MB = 1024 * 1024


def maintenance_policy(
    config: Config,
    lake: Lake,
    table: str,
    *,
    set_properties: bool = False,
    full_vacuum: bool = False,
) -> MaintenancePolicy:
    """The configured policy for ``table``; for ``predictions`` with Event Hubs on, the first
    version the outbox has not published yet is protected from vacuum and log clean-up."""
    settings = config.maintenance
    keep_from = None
    if table == PREDICTIONS and config.eventhub.enabled:
        keep_from = _first_unpublished(config, lake)
    return MaintenancePolicy(
        target_file_size=settings.target_file_size_mb * _MB,
        vacuum_retention_hours=settings.vacuum_retention_hours,
        log_retention_hours=settings.log_retention_hours,
        checkpoint_interval=settings.checkpoint_interval,
        keep_from_version=keep_from,
        set_properties=set_properties,
        full_vacuum=full_vacuum,
    )


def _first_unpublished(config: Config, lake: Lake) -> int:
    """The first ``predictions`` version the outbox still has to read. With no cursor yet, the
    publisher (when it starts) either backfills from the first commit (``eventhub.backfill``)
    or starts at the version it then finds, which is at least the head seen here."""
    from fruits.sinks.eventhubs import outbox_id, stored_cursor

    cursor = stored_cursor(lake, outbox_id(config.eventhub.name))
    if cursor is not None:
        return cursor + 1
    return 0 if config.eventhub.backfill else lake.version(PREDICTIONS) + 1


def maintain_lake(
    config: Config,
    *,
    lake: Lake | None = None,
    tables: Iterable[str] | None = None,
    set_properties: bool = False,
    full_vacuum: bool | None = None,
) -> list[MaintenanceResult]:
    """Maintain ``tables`` (default: every table of the contract) one after the other.

    ``full_vacuum`` None: as a process's first pass (``fruits maintain``), full unless
    ``maintenance.full_vacuum_every`` is 0."""
    lake = lake or open_lake(config)
    if full_vacuum is None:
        full_vacuum = config.maintenance.full_vacuum_every > 0
    results = []
    for table in tables or SCHEMAS:
        if table not in SCHEMAS:
            raise ValueError(f"no table {table!r}: one of {', '.join(SCHEMAS)}")
        policy = maintenance_policy(
            config, lake, table, set_properties=set_properties, full_vacuum=full_vacuum
        )
        results.append(lake.maintain(table, policy))
    return results


class BackgroundMaintenance:
    """The stream's maintenance thread: ``after_batch`` is an ``on_batch`` hook that only
    counts (it never waits), the thread maintains every table when ``every_batches`` batches
    were counted or ``every_minutes`` have passed. An error is logged and the stream goes on:
    maintenance is retried at the next turn, and a table left unmaintained is only slower."""

    def __init__(
        self,
        config: Config,
        *,
        lake: Lake | None = None,
        log: Callable[[str], None] = console_log,
    ) -> None:
        self._config = config
        self._lake = lake
        self._log = log
        self._every_batches = config.maintenance.every_batches
        self._every_s = config.maintenance.every_minutes * 60
        self._batches = 0
        self._due = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = threading.Condition()
        self.runs = 0  # maintenance passes finished (with or without an error)
        self.failures = 0
        self.last: list[MaintenanceResult] = []

    def after_batch(self, outcome: object = None) -> None:
        """``on_batch`` hook: count the batch; the thread does the work."""
        self._batches += 1
        if self._batches >= self._every_batches:
            self._due.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="fruits-maintenance", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread; a pass in progress finishes first (each of its commits is atomic
        anyway: a process killed mid-pass leaves every table valid)."""
        self._stop.set()
        self._due.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def wait_for_runs(self, runs: int, timeout_s: float) -> bool:
        """Block until ``runs`` passes have finished (tests, benchmarks); False on timeout."""
        with self._done:
            return self._done.wait_for(lambda: self.runs >= runs, timeout=timeout_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._due.wait(timeout=self._every_s)
            if self._stop.is_set():
                return
            self._due.clear()
            self._batches = 0
            self._run_once()

    def _run_once(self) -> None:
        started = time.perf_counter()
        try:
            self._lake = self._lake or open_lake(self._config)
            every = self._config.maintenance.full_vacuum_every
            full = every > 0 and self.runs % every == 0  # the first pass, then every Nth
            self.last = maintain_lake(self._config, lake=self._lake, full_vacuum=full)
        except Exception as exc:  # a maintenance failure must never stop the stream
            self.failures += 1
            reason = " ".join(str(exc).split())[:300]
            self._log(f"Delta maintenance failed: {type(exc).__name__}: {reason}; retried later")
        else:
            compacted = sum(r.files_compacted for r in self.last)
            vacuumed = sum(r.files_vacuumed for r in self.last)
            files = ", ".join(
                f"{r.table} {r.files_after}" for r in self.last if r.version_after >= 0
            )
            orphans = " (full: orphans too)" if any(r.full_vacuum for r in self.last) else ""
            self._log(
                f"Delta maintenance: {compacted} small files compacted, {vacuumed} vacuumed"
                f"{orphans}, files now: {files} ({time.perf_counter() - started:.1f} s)"
            )
        with self._done:
            self.runs += 1
            self._done.notify_all()
