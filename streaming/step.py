"""The micro-batch step (``foreachBatch``): photos in, predictions or quarantine rows out.

Every discovered file ends in exactly one table: a usable photo in ``predictions``, anything
else in ``quarantine`` with a reason code. Both appends carry ``Txn(query id, batch id)``, so a
batch replayed after a crash (Delta committed, checkpoint not) writes nothing twice.

The step runs wherever Spark calls ``foreachBatch``: in the driver's process (``local[*]``, a
cluster), or under Spark Connect in a Python process beside the server, from a pickled copy.
So it uses only the batch's own session (no ``SparkContext``: operation tags for the timeout),
and what the client must know of a batch it reports through :class:`OutcomeFolder`, not
through objects in this process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from fruits.features.featurizer import ship_backend
from fruits.model.classifier import PREDICTION_COLUMNS
from fruits.model.serving import ServedModel, Serving
from fruits.sinks.delta import Lake, Txn
from fruits.sinks.tables import PREDICTIONS, QUARANTINE
from fruits.spark import one_task_per_slot
from streaming.decisions import Decision, DecisionJournal

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["BatchOutcome", "BatchTimeoutError", "OutcomeFolder", "PredictionStep"]

# Outcomes kept in memory for an in-process reader (which takes them within a second or so).
OUTCOMES_KEPT = 1024

_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class BatchOutcome:
    query_id: str
    batch_id: int
    rows_in: int
    predictions: int
    quarantined: int
    model_version: int
    seconds: float
    delta_seconds: float  # of ``seconds``: the two Delta appends (the rest is the Spark job)
    replayed: bool  # True when Delta already held this batch (a replay after a crash)
    recalled: bool = False  # the answers came from the decision journal (a replay)


class OutcomeFolder:
    """Batch outcomes handed from the step to the client as one small JSON file per batch, in a
    folder both see (beside the checkpoint): under Spark Connect the step runs in another
    process, often on another machine than the client.

    A file appears whole (temporary name, then rename); the client deletes what it has read,
    so the folder holds only the batches not reported yet."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def put(self, outcome: BatchOutcome) -> None:
        folder = Path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".outcome-")
        with os.fdopen(handle, "w") as out:
            json.dump(asdict(outcome), out)
        os.replace(temporary, folder / f"{outcome.batch_id:020d}.json")

    def take(self) -> list[BatchOutcome]:
        """The outcomes not read yet, oldest batch first; read ones are deleted."""
        folder = Path(self.folder)
        if not folder.is_dir():
            return []
        outcomes = []
        for file in sorted(folder.glob("*.json")):
            outcomes.append(BatchOutcome(**json.loads(file.read_text())))
            file.unlink()
        return outcomes


class PredictionStep:
    """Callable for ``writeStream.foreachBatch``: in the driver's process, or pickled to a
    Python process beside a Spark Connect server."""

    def __init__(
        self,
        lake: Lake,
        served: ServedModel,
        *,
        query_id: Callable[[], str],
        timeout_s: float | None = None,
        on_batch: Callable[[BatchOutcome], None] | None = None,
        report_to: OutcomeFolder | None = None,
        journal: DecisionJournal | None = None,
        max_bytes: int = 20_000_000,
    ) -> None:
        self._lake = lake
        self._served = served
        self._query_id = query_id
        self._resolved_query_id: str | None = None  # read once: fixed for a checkpoint
        self._timeout_s = timeout_s
        self._on_batch = on_batch
        self._report_to = report_to
        self._journal = journal
        # The latest batches' outcomes, for the client in the same process (job.py's reports,
        # tests): bounded, a stream runs for weeks. foreachBatch calls run one after another
        # and deque appends are atomic, so no lock is needed.
        self.outcomes: deque[BatchOutcome] = deque(maxlen=OUTCOMES_KEPT)
        # images.max_bytes: a file over it by its listed size is quarantined without reading it.
        self._max_bytes = max_bytes

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.perf_counter()
        if self._resolved_query_id is None:
            self._resolved_query_id = self._query_id()
        query_id = self._resolved_query_id
        decision = None
        if self._journal is not None:
            self._journal.forget_before(batch_id)  # Spark committed those batches
            decision = self._journal.recall(query_id, batch_id)
        recalled = decision is not None
        if decision is None:
            decision = self._decide(batch, batch_id)
            if self._journal is not None:
                # Before the first Delta commit: a replay appends exactly these rows.
                self._journal.write(query_id, batch_id, decision)

        writing = time.perf_counter()
        # The Delta app id: one per query (stable across restarts), versions = batch ids.
        txn = Txn(f"fruits-stream-{query_id}", batch_id)
        wrote_quarantine = self._lake.append_arrow(decision.quarantine, QUARANTINE, txn=txn)
        wrote_predictions = self._lake.append_arrow(decision.predictions, PREDICTIONS, txn=txn)
        rows_in = decision.predictions.num_rows + decision.quarantine.num_rows
        outcome = BatchOutcome(
            query_id=query_id,
            batch_id=batch_id,
            rows_in=rows_in,
            predictions=decision.predictions.num_rows,
            quarantined=decision.quarantine.num_rows,
            model_version=decision.model_version,
            seconds=round(time.perf_counter() - started, 3),
            delta_seconds=round(time.perf_counter() - writing, 3),
            replayed=not (wrote_predictions or wrote_quarantine) and rows_in > 0,
            recalled=recalled,
        )
        self.outcomes.append(outcome)
        if self._report_to is not None:
            self._report_to.put(outcome)
        if self._on_batch:
            self._on_batch(outcome)

    def _decide(self, batch: DataFrame, batch_id: int) -> Decision:
        """Run the batch's Spark job: every photo's answer, or its reason for quarantine."""
        discovered_at = dt.datetime.now(dt.UTC)
        serving = self._served.refresh()  # hot-swap point: between micro-batches
        # The version's ONNX export to the executors (once per session and file).
        ship_backend(batch.sparkSession, serving.spec)
        with _deadline(batch, batch_id, self._timeout_s):
            photos = _photos_through(batch, serving.udf, max_bytes=self._max_bytes)
            if serving.scorer is not None:
                predictions, quarantine = _answer_in_one_job(photos)
            else:
                predictions, quarantine = _answer_with_spark_ml(photos, serving)

        predicted_at = dt.datetime.now(dt.UTC)
        return Decision(
            predictions=self._lake.conform(
                _prediction_rows(
                    predictions, serving.version, batch_id, discovered_at, predicted_at
                ),
                PREDICTIONS,
            ),
            quarantine=self._lake.conform(
                _quarantine_rows(quarantine, batch_id, predicted_at), QUARANTINE
            ),
            model_version=serving.version,
        )


def _photos_through(batch: DataFrame, udf: Any, *, max_bytes: int) -> DataFrame:
    """The batch's photos (path, uploaded_at, size_bytes) with the columns of ``udf``'s struct
    result on ``content`` (image_id first), in one task per task slot (a source may pack
    ~32 photos per task: :func:`~fruits.spark.one_task_per_slot`).

    A file the source did not read (``unread_reason``: too large by its listed size, or
    unreadable) keeps that reason. A source without that column (Auto Loader, the tests' memory
    source) has its files over ``max_bytes`` by their listed size split off before the read:
    ``binaryFile`` prunes ``content`` from that branch and pushes the ``length`` filter down, so
    a 2 GB upload is never read (Spark would fail the batch on it)."""
    from pyspark.sql import functions as F

    if "unread_reason" not in batch.columns:
        too_large = F.col("length") > F.lit(max_bytes)
        detail = F.concat(
            F.col("length").cast("string"),
            F.lit(f" bytes > {max_bytes} (by its listed size; not read)"),
        )
        batch = (
            batch.where(~too_large)
            .select(
                "path",
                "modificationTime",
                "length",
                "content",
                F.lit(None).cast("string").alias("unread_reason"),
                F.lit(None).cast("string").alias("unread_detail"),
            )
            .unionByName(
                batch.where(too_large).select(
                    "path",
                    "modificationTime",
                    "length",
                    F.lit(None).cast("binary").alias("content"),
                    F.lit("too_large_bytes").alias("unread_reason"),
                    detail.alias("unread_detail"),
                )
            )
        )
    unread = F.col("unread_reason").isNotNull()
    return (
        one_task_per_slot(batch)
        .select(
            "path",
            F.col("modificationTime").alias("uploaded_at"),
            F.col("length").alias("size_bytes"),
            "unread_reason",
            "unread_detail",
            udf("content").alias("result"),
        )
        .select("path", "uploaded_at", "size_bytes", "unread_reason", "unread_detail", "result.*")
        .withColumn("reason", F.when(unread, F.col("unread_reason")).otherwise(F.col("reason")))
        .withColumn("detail", F.when(unread, F.col("unread_detail")).otherwise(F.col("detail")))
        .drop("unread_reason", "unread_detail")
    )


def _answer_in_one_job(photos: DataFrame) -> tuple[pa.Table, pa.Table]:
    """A linear model: features and answers in the same pandas UDF, so the micro-batch is one
    Spark job, and only the answers (not 768-2048 floats a photo) come back to the driver."""
    rows = photos.toArrow()
    usable = pc.is_null(rows.column("reason"))
    predictions = rows.filter(usable).drop_columns(["reason", "detail", "size_bytes"])
    quarantine = rows.filter(pc.invert(usable)).drop_columns(list(PREDICTION_COLUMNS))
    return predictions, quarantine


def _answer_with_spark_ml(photos: DataFrame, serving: Serving) -> tuple[pa.Table, pa.Table]:
    """Any other model (the trees): features from the UDF, answers from Spark ML."""
    from pyspark.sql import functions as F

    assert serving.model is not None
    # Decoded once and kept for both outputs; the decoder applies the byte/pixel limits.
    featurized = photos.persist()
    try:
        quarantine = featurized.where(F.col("reason").isNotNull()).drop("features").toArrow()
        scored = serving.model.predict(featurized.where(F.col("reason").isNull())).drop(
            "features", "reason", "detail", "size_bytes"
        )
        return scored.toArrow(), quarantine
    finally:
        featurized.unpersist()


class BatchTimeoutError(RuntimeError):
    """A micro-batch ran past ``stream.batch_timeout_s``; its Spark jobs were cancelled."""


@contextmanager
def _deadline(batch: DataFrame, batch_id: int, seconds: float | None) -> Iterator[None]:
    """Cancel this batch's Spark jobs after ``seconds``: the query then fails instead of
    stalling, and its restart (by the scheduler) replays the batch exactly once.

    The batch's operations carry an operation tag, interrupted from a timer thread: the same
    calls in a classic session and under Spark Connect (which has no job groups)."""
    if not seconds:
        yield
        return
    spark = batch.sparkSession
    tag = f"fruits-batch-{batch_id}-{uuid.uuid4().hex[:8]}"
    spark.addTag(tag)
    expired = threading.Event()

    def cancel() -> None:
        expired.set()
        spark.interruptTag(tag)

    timer = threading.Timer(seconds, cancel)
    timer.daemon = True
    timer.start()
    message = f"micro-batch {batch_id} ran past stream.batch_timeout_s={seconds:g}: cancelled"
    try:
        yield
    except Exception as exc:
        if expired.is_set():
            raise BatchTimeoutError(message) from exc
        raise
    else:
        # The timer may fire between two Spark jobs (nothing to cancel then): still a timeout.
        if expired.is_set():
            raise BatchTimeoutError(message)
    finally:
        timer.cancel()
        spark.removeTag(tag)


def _constant(value: object, n: int, kind: pa.DataType) -> pa.Array:
    return pa.array([value] * n, kind)


def _prediction_rows(
    scored: pa.Table,
    version: int,
    batch_id: int,
    discovered_at: dt.datetime,
    predicted_at: dt.datetime,
) -> pa.Table:
    n = scored.num_rows
    uploaded = scored.column("uploaded_at").cast(_TS)
    predicted = _constant(predicted_at, n, _TS)
    latency_us = pc.subtract(predicted.cast(pa.int64()), uploaded.cast(pa.int64()))
    return (
        scored.set_column(scored.schema.get_field_index("uploaded_at"), "uploaded_at", uploaded)
        .append_column("model_version", _constant(version, n, pa.int64()))
        .append_column("discovered_at", _constant(discovered_at, n, _TS))
        .append_column("predicted_at", predicted)
        .append_column("latency_ms", pc.divide(latency_us.cast(pa.float64()), 1000.0))
        .append_column("batch_id", _constant(batch_id, n, pa.int64()))
    )


def _quarantine_rows(bad: pa.Table, batch_id: int, detected_at: dt.datetime) -> pa.Table:
    n = bad.num_rows
    # Bytes that cannot be decoded still have a sha256: keep it, it identifies the upload.
    return bad.append_column("detected_at", _constant(detected_at, n, _TS)).append_column(
        "batch_id", _constant(batch_id, n, pa.int64())
    )
