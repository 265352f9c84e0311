"""``fruits stream``: the long-running Structured Streaming job (or one ``--once`` pass).

landing discovery -> :class:`~streaming.step.PredictionStep` in ``foreachBatch`` -> Delta.
One log line per micro-batch, written by this process from the step's outcomes: read from the
step itself when it runs here (``local[*]``, a cluster's driver), from an
:class:`~streaming.step.OutcomeFolder` beside the checkpoint under Spark Connect, where it runs
beside the server. No JVM listener, no state shared through module globals. SIGINT/SIGTERM stop
the query between or during a batch, which is safe because every batch commit is idempotent.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fruits.config import Config, is_url
from fruits.console import log
from fruits.errors import FruitsError
from fruits.features.featurizer import ship_backend
from fruits.model.serving import ServedModel
from fruits.sinks.delta import Lake, open_lake
from fruits.sinks.tables import PREDICTIONS
from fruits.sources.landing import landing_source
from fruits.spark import get_spark, is_connect, stream_process, ui_address
from streaming.decisions import DecisionJournal
from streaming.step import BatchOutcome, OutcomeFolder, PredictionStep

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming.query import StreamingQuery

    from fruits.sinks.eventhubs import HubTarget, Producer

__all__ = ["CheckpointInUseError", "run_stream", "start_query"]


class CheckpointInUseError(FruitsError):
    """Another process runs a query on this checkpoint."""


def checkpoint_path(config: Config) -> str:
    return f"{config.path('checkpoints').rstrip('/')}/{config.stream.query_name}"


def run_stream(
    config: Config,
    *,
    once: bool,
    eventhub_client: Callable[[HubTarget], Producer] | None = None,
) -> dict[str, Any]:
    """Run until stopped (or, with ``once``, until what is in the landing is processed).

    ``eventhub_client`` replaces the Event Hubs SDK client (tests)."""
    stream_process()  # the hooks below may start the session (a Spark lake): the stream's JVM
    checkpoint = checkpoint_path(config)
    with (
        checkpoint_lock(checkpoint),
        _event_publishing(config, eventhub_client) as publish_events,
        _background_maintenance(config) as maintain,
    ):
        on_batch = _hooks(publish_events, maintain)
        served = ServedModel(config, log=log)
        spark = get_spark(config, streaming=True)
        # The champion, else the newest older version that loads. With none: --once fails now,
        # clearly (one pass, its exit code tells); the long-running job waits and retries,
        # logged, so a bad registry never makes its restarts a crash loop.
        if once:
            served.refresh()
        else:
            served.wait()
        # The one-time ONNX export into a fresh cache (seconds) happens here, not inside the
        # first micro-batch, where it would count against the batch and its timeout; then it
        # goes to the executors through Spark.
        ship_backend(spark, served.current.spec)
        ui = ui_address(spark)
        if ui:
            log(f"Spark UI (Jobs, SQL, Structured Streaming): {ui}")
        source = landing_source(spark, config, checkpoint)
        stop = threading.Event()
        previous = {
            sig: signal.signal(sig, lambda *_: stop.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        remote = is_connect(spark)
        folder = _outcome_folder(checkpoint) if remote else None
        if folder is not None:
            folder.take()  # a killed run's leftovers: their batches are already in Delta
        # Under Spark Connect the step runs beside the server: it reports through files, and
        # the Event Hubs hook (threads, clients) stays here, run as each report arrives.
        query, step = start_query(
            spark,
            config,
            source,
            served=served,
            once=once,
            on_batch=None if remote else on_batch,
        )
        reports = _Reports(step, folder, remote=remote)
        totals = _Totals()

        def report() -> None:
            for p in totals.add_progress(query.recentProgress):
                if reports.blind:  # the step's reports cannot reach us: Spark's counts only
                    log(
                        f"batch {p['batchId']}: {p['numInputRows']} in, "
                        f"{p['batchDuration'] / 1000:.2f} s (Spark's progress; the step's "
                        "own counts are in the server's log)"
                    )
            for outcome in reports.take():
                _log_batch(outcome)
                totals.add_outcome(outcome)
                if remote and on_batch is not None:
                    on_batch(outcome)

        log(
            f"streaming {config.path('landing')} -> {config.path('lake')} "
            f"({'once' if once else 'every ' + config.stream.trigger_interval}); "
            f"model v{served.current.version}; Ctrl-C stops"
        )
        try:
            while query.isActive and not stop.is_set():
                query.awaitTermination(1)
                report()
        finally:
            if query.isActive:
                log("stopping the query (a batch in flight is replayed, exactly once, on restart)")
                query.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            report()
            if query.exception() is not None:
                log(f"query terminated with an error: {str(query.exception()).splitlines()[0]}")
        if query.exception() is not None:
            raise FruitsError(f"the streaming query failed: {query.exception()}")
    return {
        **totals.counts(blind=reports.blind),
        "model_version": served.current.version,
        # None: Spark's progress of those batches was gone before it was read (a short --once
        # run under Spark Connect, whose server forgets an ended query's progress).
        "busy_seconds": round(totals.busy_ms / 1000, 3)
        if totals.busy_batches or not totals.batches
        else None,
        "busy_phases_ms": dict(totals.phases_ms),
        "stopped_by_signal": stop.is_set(),
    }


class _Totals:
    """What a run reports, summed as batches end: a few counters, however long it runs (no list
    of batches nor of Spark's progress events, which a weeks-long stream would pile up)."""

    def __init__(self) -> None:
        self.batches = self.rows_in = self.predictions = self.quarantined = 0
        # Spark's own time for the triggers that had photos: discovery (listing), the batch,
        # and the offset/commit log writes; not the query's start-up or idle triggers. Where
        # it went: latestOffset (discovery), addBatch (the foreachBatch step: Spark job + Delta
        # commits), walCommit / commitOffsets (the checkpoint's logs), queryPlanning, getBatch.
        self.busy_batches = self.busy_rows = self.busy_ms = 0
        self.phases_ms = Counter[str]()
        self._last_busy = -1  # batch ids only grow: this is every busy batch counted so far

    def add_progress(self, recent: list[Any]) -> list[Any]:
        """Count the busy triggers of Spark's recent progress not counted yet (kept as they
        come: a Spark Connect server may forget an ended query's progress); returns them."""
        fresh = sorted(
            (p for p in recent if p["numInputRows"] and p["batchId"] > self._last_busy),
            key=lambda p: int(p["batchId"]),
        )
        for p in fresh:
            durations = p["durationMs"]
            self.busy_batches += 1
            self.busy_rows += int(p["numInputRows"])
            self.busy_ms += durations.get("triggerExecution", 0)
            self.phases_ms.update(
                {k: int(v) for k, v in durations.items() if k != "triggerExecution"}
            )
            self._last_busy = int(p["batchId"])
        return fresh

    def add_outcome(self, outcome: BatchOutcome) -> None:
        self.batches += 1
        self.rows_in += outcome.rows_in
        self.predictions += outcome.predictions
        self.quarantined += outcome.quarantined

    def counts(self, *, blind: bool) -> dict[str, int | None]:
        if blind:  # only Spark's progress reached this process
            return {
                "batches": self.busy_batches,
                "rows_in": self.busy_rows,
                "predictions": None,
                "quarantined": None,
            }
        return {
            "batches": self.batches,
            "rows_in": self.rows_in,
            "predictions": self.predictions,
            "quarantined": self.quarantined,
        }


def start_query(
    spark: SparkSession,
    config: Config,
    source: DataFrame,
    *,
    served: ServedModel,
    once: bool,
    checkpoint: str | None = None,
    on_batch: Callable[[BatchOutcome], None] | None = None,
    lake: Lake | None = None,
) -> tuple[StreamingQuery, PredictionStep]:
    """Start the prediction query over any source with the binaryFile schema (tests use this
    with the memory source). ``on_batch`` runs after each batch's Delta commit; ``lake``
    replaces the configured one (fault-injection tests)."""
    checkpoint = checkpoint or checkpoint_path(config)
    remote = is_connect(spark)
    lake = lake or open_lake(config)
    lake.add_missing_columns(PREDICTIONS)  # a table from before the answer's kind level
    step = PredictionStep(
        lake,
        served,
        query_id=partial(query_id, checkpoint),
        timeout_s=config.stream.batch_timeout_s,
        on_batch=on_batch,
        report_to=_outcome_folder(checkpoint) if remote else None,
        journal=DecisionJournal(f"{checkpoint.rstrip('/')}/decisions"),
        max_bytes=config.images.max_bytes,
    )
    writer = (
        source.writeStream.foreachBatch(step)
        .option("checkpointLocation", checkpoint)
        .queryName(config.stream.query_name)
    )
    writer = (
        writer.trigger(availableNow=True)
        if once
        else writer.trigger(processingTime=config.stream.trigger_interval)
    )
    return writer.start(), step


def query_id(checkpoint: str) -> str:
    """The query's id, stable across restarts: Spark keeps it in the checkpoint's metadata."""
    from pyspark.sql import SparkSession

    path = f"{checkpoint.rstrip('/')}/metadata"
    if is_url(checkpoint):
        spark = SparkSession.getActiveSession()
        assert spark is not None
        text = "\n".join(r.value for r in spark.read.text(path).collect())
    else:
        text = Path(path).read_text()
    return str(json.loads(text)["id"])


# Databricks' FUSE mounts of object storage: a path, but flock there locks nothing across
# machines, and a lock file's append-mode writes may be refused. Treated like a URL.
_FUSE_PREFIXES = ("/Volumes/", "/dbfs/", "/Workspace/")
# Checkpoints without an OS lock (URLs, FUSE mounts) that a query of this process runs on.
_IN_USE: set[str] = set()
_IN_USE_GUARD = threading.Lock()


@contextmanager
def checkpoint_lock(checkpoint: str) -> Iterator[None]:
    """Refuse a second query on a checkpoint in use.

    A local checkpoint: an OS lock (``flock``) on ``<checkpoint>.lock``, which the OS drops if
    the process dies (even ``kill -9``). A URL (``abfss://``, ``az://``, ``dbfs:/``...) or a
    Databricks Volume (``/Volumes/...``, ``/dbfs/``, ``/Workspace/``): no lock file. A second
    query in this process is refused; across processes one run at a time is the scheduler's
    (a continuous job runs once) and Spark's own: in one cluster a query started again on the
    checkpoint stops the running one (``spark.sql.streaming.stopActiveRunOnRestart``), and on
    two clusters the second writer of a batch's offsets fails (CONCURRENT_STREAM_LOG_UPDATE),
    while each batch's Delta commit is idempotent (transaction id = query id, batch id)."""
    if is_url(checkpoint) or checkpoint.startswith(_FUSE_PREFIXES):
        with _in_use_by_this_process(checkpoint):
            yield
        return
    lock_path = Path(f"{checkpoint.rstrip('/')}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise CheckpointInUseError(
                f"checkpoint {checkpoint} is in use by {holder}: one query per checkpoint"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield


@contextmanager
def _in_use_by_this_process(checkpoint: str) -> Iterator[None]:
    """Hold ``checkpoint`` for this process' one query on it (no OS lock where it lives)."""
    key = checkpoint.rstrip("/")
    with _IN_USE_GUARD:
        if key in _IN_USE:
            raise CheckpointInUseError(
                f"checkpoint {checkpoint} is in use by another query of this process "
                f"(pid {os.getpid()}): one query per checkpoint"
            )
        _IN_USE.add(key)
    try:
        yield
    finally:
        with _IN_USE_GUARD:
            _IN_USE.discard(key)


@contextmanager
def _event_publishing(
    config: Config, client: Callable[[HubTarget], Producer] | None = None
) -> Iterator[Callable[[BatchOutcome], None] | None]:
    """With ``eventhub.enabled``, an ``on_batch`` hook waking the publisher's own thread
    (fruits/sinks/eventhubs.py), which publishes the predictions' events off the batch's path:
    what a previous run left at start, after each batch commit, every
    ``eventhub.retry_interval_s``, and what is left before exit. Started before the query, so
    with no outbox cursor yet it starts at the version found now (``eventhub.backfill``)."""
    if not config.eventhub.enabled:
        yield None
        return
    from fruits.sinks.eventhubs import EventHubsPublisher

    publisher = EventHubsPublisher.from_config(config, client_factory=client)
    publisher.start()
    try:
        yield publisher.after_batch
    finally:
        publisher.close()


@contextmanager
def _background_maintenance(config: Config) -> Iterator[Callable[[BatchOutcome], None] | None]:
    """With ``maintenance.enabled``, an ``on_batch`` hook counting batches for the Delta
    maintenance thread (fruits/sinks/maintenance.py), which compacts, vacuums and checkpoints
    the tables every ``every_batches`` batches or ``every_minutes``, off the batches' path."""
    if not config.maintenance.enabled:
        yield None
        return
    from fruits.sinks.maintenance import BackgroundMaintenance

    maintenance = BackgroundMaintenance(config)
    maintenance.start()
    try:
        yield maintenance.after_batch
    finally:
        maintenance.close()


def _hooks(
    *hooks: Callable[[BatchOutcome], None] | None,
) -> Callable[[BatchOutcome], None] | None:
    """One ``on_batch`` hook running each of ``hooks`` in turn (None: there is none)."""
    present = [hook for hook in hooks if hook is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]

    def run_all(outcome: BatchOutcome) -> None:
        for hook in present:
            hook(outcome)

    return run_all


def _outcome_folder(checkpoint: str) -> OutcomeFolder | None:
    """Where a step running beside a Spark Connect server reports its batches: beside a local
    checkpoint (a path the client and the server both see: the same machine, a shared disk,
    /Volumes on Databricks). None for a URL checkpoint: the client then logs Spark's progress
    only (rows in, duration), and the step's own counts go to the server's log."""
    if is_url(checkpoint):
        return None
    return OutcomeFolder(f"{checkpoint.rstrip('/')}.outcomes")


class _Reports:
    """The outcomes of batches not reported yet: from the step object itself when it runs in
    this process, else from the folder it writes to (``blind``: neither)."""

    def __init__(self, step: PredictionStep, folder: OutcomeFolder | None, *, remote: bool) -> None:
        self._step = step
        self._folder = folder
        self.blind = remote and folder is None
        self._last = -1  # batch ids only grow within a run

    def take(self) -> list[BatchOutcome]:
        if self._folder is not None:
            return self._folder.take()
        if self.blind:
            return []
        new = sorted(
            (o for o in list(self._step.outcomes) if o.batch_id > self._last),
            key=lambda o: o.batch_id,
        )
        if new:
            self._last = new[-1].batch_id
        return new


def _log_batch(outcome: BatchOutcome) -> None:
    replay = " (replay: already in Delta)" if outcome.replayed else ""
    log(
        f"batch {outcome.batch_id}: {outcome.rows_in} in, {outcome.predictions} predicted, "
        f"{outcome.quarantined} quarantined, {outcome.seconds:.2f} s "
        f"(Delta {outcome.delta_seconds:.2f} s), model v{outcome.model_version}{replay}"
    )
