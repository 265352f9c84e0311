"""Event Hubs publishing of predictions, through an outbox read from Delta.

Delta stays the system of record: a micro-batch commits its predictions first, then this module
publishes them as events. The outbox is the ``predictions`` table itself, read by Delta version:
the cursor (the version up to which events are confirmed by Event Hubs) lives in the small
``eventhub_outbox`` Delta table, and the rows of versions ``(cursor, head]`` are what is pending.
If Event Hubs is down, nothing is lost: the cursor stays, and the next pass (woken after the
next micro-batch, or every ``eventhub.retry_interval_s``) publishes them.

Publishing runs in the publisher's own thread, never in the micro-batch: ``after_batch`` only
wakes it. A pass sends for about ``eventhub.publish_timeout_s`` from its first send: the
deadline is checked before each send, and each send is given what is left of it. Enabled on
a lake with history and no cursor yet, the outbox starts at the current ``predictions``
version (``eventhub.backfill: true`` publishes the history instead). The pending count comes
from the log (the added files' ``numRecords``), not from reading the rows.

Delivery is at least once. A crash between the send and the cursor commit publishes that
chunk again, with the same ``event_id`` (sha256 of path, upload time and image id), which
consumers deduplicate on; it is also the AMQP ``message_id``.

Options (``eventhub`` section of the config):
    enabled: publish or not (off by default).
    connection_string_env: the NAME of the environment variable holding the connection string
        (on Databricks, the job maps ``{{secrets/<scope>/<key>}}`` to it).
    fully_qualified_namespace: with no connection string in the environment, connect to this
        namespace as the managed identity (``DefaultAzureCredential``).
    name: the event hub (``EntityPath`` of the connection string, when it has one, must match).
    publish_timeout_s: how long a pass may send (from its first send); no send starts after
        it, and a send is given what is left of it.
    retry_interval_s: how often the thread publishes when no micro-batch wakes it.
    backfill: with no cursor yet, publish the rows already in ``predictions`` (default: start
        at its current version).

Example::

    publisher = EventHubsPublisher.from_config(config)  # reads the connection string env var
    publisher.publish_pending()  # -> PublishResult(published=..., pending=0, ...)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from fruits.console import log as console_log
from fruits.errors import ConfigError
from fruits.secrets import redact, redact_sdk_logs
from fruits.sinks.delta import Lake, open_lake
from fruits.sinks.tables import EVENTHUB_OUTBOX, PREDICTIONS, SCHEMAS

if TYPE_CHECKING:
    from azure.eventhub import EventData, EventDataBatch

    from fruits.config import Config

__all__ = [
    "CONTENT_TYPE",
    "EVENT_TYPE",
    "EventHubsPublisher",
    "HubTarget",
    "Producer",
    "PublishResult",
    "event_id",
    "hub_target",
    "outbox_cursor",
    "outbox_id",
    "pending_events",
    "prediction_events",
    "sdk_producer",
    "stored_cursor",
]

CONTENT_TYPE = "application/json"
EVENT_TYPE = "fruits.prediction"
# Delta versions (micro-batches, each at most stream.max_files_per_trigger rows) per chunk: the
# cursor advances per chunk, so a chunk is also what a crash may publish twice.
_CHUNK_VERSIONS = 8
# A send is not started with less than this left of the pass (it would time out at once).
_MIN_SEND_S = 0.05


# --- events (pure) ---------------------------------------------------------------------------


def event_id(path: str, uploaded_at: dt.datetime | None, image_id: str) -> str:
    """Deterministic: the same prediction row gives the same id on every (re)publish."""
    stamp = uploaded_at.isoformat() if uploaded_at is not None else ""
    return hashlib.sha256(f"{path}|{stamp}|{image_id}".encode()).hexdigest()


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def prediction_events(rows: pa.Table) -> list[dict[str, Any]]:
    """One JSON-able event per prediction row (the ``predictions`` schema)."""
    events = []
    for row in rows.to_pylist():
        events.append(
            {
                "event_id": event_id(row["path"], row["uploaded_at"], row["image_id"]),
                "type": EVENT_TYPE,
                "image_id": row["image_id"],
                "path": row["path"],
                "label": row["label"],
                "confidence": row["confidence"],
                "top_k": [{"label": t["label"], "prob": t["prob"]} for t in row["top_k"] or []],
                "is_unknown": row["is_unknown"],
                # The kind level (fruits/model/answers.py); null in rows from before it.
                "kind": row.get("kind"),
                "kind_confidence": row.get("kind_confidence"),
                "variety_not_sure": row.get("variety_not_sure"),
                "model_version": row["model_version"],
                "uploaded_at": _iso(row["uploaded_at"]),
                "predicted_at": _iso(row["predicted_at"]),
                "latency_ms": row["latency_ms"],
                "batch_id": row["batch_id"],
            }
        )
    return events


def _event_data(event: dict[str, Any]) -> EventData:
    from azure.eventhub import EventData

    data = EventData(json.dumps(event, separators=(",", ":")))
    data.message_id = event["event_id"]
    data.content_type = CONTENT_TYPE
    data.properties = {"event_id": event["event_id"], "type": EVENT_TYPE}
    return data


# --- the SDK client boundary -----------------------------------------------------------------


class Producer(Protocol):
    """What this module calls on ``azure.eventhub.EventHubProducerClient`` (tests fake it)."""

    def create_batch(self, *, partition_key: str | None = None) -> EventDataBatch: ...

    def send_batch(self, event_data_batch: EventDataBatch, *, timeout: float | None = None) -> None:
        """Blocks until Event Hubs acknowledged the batch; raises ``EventHubError`` if not."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class HubTarget:
    """Where to publish and how to authenticate. The connection string is kept out of repr."""

    name: str
    fully_qualified_namespace: str | None = None
    connection_string: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0

    @property
    def secrets(self) -> tuple[str, ...]:
        """Literal values to mask in any message: the string and its key or signature."""
        if not self.connection_string:
            return ()
        values = [self.connection_string]
        for part in self.connection_string.split(";"):
            name, _, value = part.partition("=")
            if name.strip().lower() in ("sharedaccesskey", "sharedaccesssignature"):
                values.append(value.strip())
        return tuple(values)


def hub_target(config: Config, *, environ: Mapping[str, str] | None = None) -> HubTarget:
    """The target from config and environment; a missing or mismatched setting fails with one
    line (which never contains the connection string)."""
    settings = config.eventhub
    environ = os.environ if environ is None else environ
    connection_string = environ.get(settings.connection_string_env) or None
    if connection_string is None and settings.fully_qualified_namespace is None:
        raise ConfigError(
            f"eventhub.enabled but no connection string in ${settings.connection_string_env} "
            "(eventhub.connection_string_env) and no eventhub.fully_qualified_namespace for a "
            "managed identity"
        )
    if connection_string is not None:
        entity = _connection_string_field(connection_string, "EntityPath")
        if entity is not None and entity != settings.name:
            raise ConfigError(
                f"config key 'eventhub.name' is {settings.name!r} but the connection string in "
                f"${settings.connection_string_env} is for event hub {entity!r}"
            )
    return HubTarget(
        name=settings.name,
        fully_qualified_namespace=settings.fully_qualified_namespace,
        connection_string=connection_string,
        timeout_s=settings.publish_timeout_s,
    )


def _connection_string_field(connection_string: str, name: str) -> str | None:
    for part in connection_string.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == name.lower() and value.strip():
            return value.strip()
    return None


def sdk_producer(target: HubTarget) -> Producer:
    """The real client: from the connection string, else the namespace as the managed identity
    (``DefaultAzureCredential``). It connects on first use, not here."""
    from azure.eventhub import EventHubProducerClient

    # The outbox retries across passes, so the SDK's own retries are kept short: a pass fails
    # within about publish_timeout_s while Event Hubs is down.
    options: dict[str, Any] = {
        "retry_total": 1,
        "retry_backoff_max": min(target.timeout_s, 5.0),
        "auth_timeout": target.timeout_s,
    }
    redact_sdk_logs("azure")
    if target.connection_string:
        try:
            client = EventHubProducerClient.from_connection_string(
                target.connection_string, eventhub_name=target.name, **options
            )
        except (ValueError, TypeError) as exc:
            message = redact(str(exc), known=target.secrets)
            raise ConfigError(f"the Event Hubs connection string is not valid: {message}") from None
        return client
    from azure.identity import DefaultAzureCredential

    assert target.fully_qualified_namespace is not None  # hub_target() checked it
    return EventHubProducerClient(
        target.fully_qualified_namespace, target.name, DefaultAzureCredential(), **options
    )


def _reason(exc: BaseException, target: HubTarget, *, limit: int = 300) -> str:
    """One redacted line for a log: the error type and the start of its message."""
    text = redact(f"{type(exc).__name__}: {' '.join(str(exc).split())}", known=target.secrets)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _outage_errors() -> tuple[type[BaseException], ...]:
    """What an unavailable Event Hubs raises: the SDK's errors (connect, auth, timeouts,
    throttling), azure-core's (credentials), and the network's."""
    from azure.core.exceptions import AzureError
    from azure.eventhub.exceptions import EventHubError

    return (EventHubError, AzureError, OSError, TimeoutError)


# --- the outbox ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishResult:
    published: int  # events confirmed by Event Hubs in this pass
    pending: int  # events still waiting in the outbox after it (-1: not known)
    cursor: int  # the predictions version published up to
    error: str | None = None  # the redacted reason, when Event Hubs was unavailable
    busy: bool = False  # another pass was running: this one did nothing
    timed_out: bool = False  # the pass reached publish_timeout_s with events left


def outbox_id(config_name: str) -> str:
    return f"eventhub/{config_name}"


def stored_cursor(lake: Lake, app_id: str) -> int | None:
    """The predictions version up to which events are published (-1: from the first); None
    while the outbox has no cursor for ``app_id`` (the publisher never started)."""
    rows = lake.read_arrow(
        EVENTHUB_OUTBOX, columns=["predictions_version"], equals={"app_id": app_id}
    )
    versions = rows.column("predictions_version").to_pylist()
    return max(versions) if versions else None


def outbox_cursor(lake: Lake, app_id: str) -> int:
    """The predictions version up to which events are published; -1 before the first."""
    cursor = stored_cursor(lake, app_id)
    return -1 if cursor is None else cursor


def pending_events(lake: Lake, app_id: str, *, backfill: bool = False) -> tuple[int, int, int]:
    """(events pending, cursor, head version) of the outbox: for logs and ``fruits status``.

    Counted from the log (each pending commit's added ``numRecords``): no data file is read,
    however long the backlog. With no cursor yet, nothing is pending unless ``backfill``."""
    cursor = stored_cursor(lake, app_id)
    head = lake.version(PREDICTIONS)
    if cursor is None and not backfill:
        return 0, -1, head
    cursor = -1 if cursor is None else cursor
    return lake.appended_rows(PREDICTIONS, cursor, until_version=head), cursor, head


class EventHubsPublisher:
    """Publishes what the outbox holds; one pass at a time (a lock), never raising an outage.

    ``start()`` runs the publishing thread, ``after_batch`` (the stream's ``on_batch`` hook)
    wakes it, ``close()`` stops it, publishes what is left and closes the client."""

    def __init__(
        self,
        lake: Lake,
        target: HubTarget,
        *,
        client_factory: Callable[[HubTarget], Producer] = sdk_producer,
        retry_interval_s: float = 30.0,
        backfill: bool = False,
        log: Callable[[str], None] = console_log,
    ) -> None:
        self._lake = lake
        self.target = target
        self.app_id = outbox_id(target.name)
        self._client_factory = client_factory
        self._client: Producer | None = None
        self._retry_interval_s = retry_interval_s
        self._backfill = backfill
        self._log = log
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None
        self._has_cursor = False
        self._start_head: int | None = None  # the predictions version when start() ran
        self._chunk_versions = _CHUNK_VERSIONS
        self._sent_in_pass = False  # a send of this pass was acknowledged
        self._oversize = False  # a micro-batch did not fit in a pass: the next sends it whole
        self._passes = threading.Condition()
        self._started = 0  # passes started, and finished (flush)
        self._finished = 0

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        lake: Lake | None = None,
        environ: Mapping[str, str] | None = None,
        client_factory: Callable[[HubTarget], Producer] | None = None,
        log: Callable[[str], None] = console_log,
    ) -> EventHubsPublisher:
        publisher = cls(
            lake or open_lake(config),
            hub_target(config, environ=environ),
            client_factory=client_factory or sdk_producer,
            retry_interval_s=config.eventhub.retry_interval_s,
            backfill=config.eventhub.backfill,
            log=log,
        )
        publisher._producer()  # a malformed connection string fails now; nothing connects yet
        return publisher

    # -- passes --

    def publish_pending(self) -> PublishResult:
        """Publish what is pending, chunk by chunk, for about ``publish_timeout_s``.

        An unavailable Event Hubs is logged as one redacted line and returned as
        ``PublishResult.error``; the events stay in the outbox for the next pass."""
        # A pass that finds another running asks it for one more round (``_wanted``), so a
        # batch committed during that pass is not left for the next wake-up.
        self._wanted.set()
        result = PublishResult(published=0, pending=-1, cursor=-1, busy=True)
        while self._wanted.is_set() and self._lock.acquire(blocking=False):
            with self._passes:
                self._started += 1
            try:
                self._wanted.clear()
                result = self._publish()
            finally:
                self._lock.release()
                with self._passes:
                    self._finished += 1
                    self._passes.notify_all()
            if result.error is not None or result.timed_out:
                break
        return result

    def _cursor(self) -> int:
        """The outbox cursor. With none yet, where this publisher starts: at the head it found
        at ``start()``, committed as the cursor (the history is not published), or, with
        ``backfill``, -1: from the first commit (the maintenance keeps them meanwhile)."""
        if self._has_cursor:
            return outbox_cursor(self._lake, self.app_id)
        cursor = stored_cursor(self._lake, self.app_id)
        if cursor is None and self._backfill:
            self._log(
                f"Event Hubs backfill: the {self._lake.count(PREDICTIONS)} predictions already "
                "in the table are published first"
            )
            self._has_cursor = True  # no row until the first chunk is confirmed
            return -1
        if cursor is None:
            head = self._lake.version(PREDICTIONS) if self._start_head is None else self._start_head
            self._commit_cursor(head, 0)
            if head >= 0:
                self._log(
                    f"Event Hubs outbox starts at predictions version {head}: the "
                    f"{self._lake.count(PREDICTIONS)} predictions already in the table are not "
                    "published (eventhub.backfill: true would)"
                )
            cursor = head
        self._has_cursor = True
        return cursor

    def _publish(self) -> PublishResult:
        # Delta errors propagate (storage is not Event Hubs); only the sends are an outage.
        cursor = self._cursor()
        head = self._lake.version(PREDICTIONS)
        published = 0
        timed_out = False
        self._sent_in_pass = False
        # The pass's time runs from its first send: a slow read of the first chunk (Spark's
        # writer on a busy driver) never leaves it without time to send, so every pass can
        # move the cursor; later chunks are read only while time is left.
        deadline: float | None = None
        # One micro-batch that did not fit in a pass goes whole in the next one (each send
        # still bounded by the timeout), or it would be cut, and partly sent again, forever.
        whole = self._oversize
        while cursor < head:
            if deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                break
            chunk = 1 if whole else self._chunk_versions
            rows, until = self._lake.read_appended(
                PREDICTIONS, cursor, until_version=min(head, cursor + chunk)
            )
            events = prediction_events(rows)
            if deadline is None and not whole:
                deadline = time.monotonic() + self.target.timeout_s
            try:
                complete = self._send(events, deadline=deadline)
            except _outage_errors() as exc:
                self._chunk_versions = max(1, self._chunk_versions // 2)
                return self._unavailable(exc, published=published, cursor=cursor)
            if not complete:
                # The deadline came inside the chunk: its sent events go again next pass
                # (same ids), in a smaller chunk, so a slow hub still moves the cursor. One
                # micro-batch is the least a pass must send to move it.
                if until - cursor <= 1:
                    self._oversize = True
                    self._log(
                        f"Event Hubs: the {len(events)} events of predictions version {until} "
                        f"take longer than eventhub.publish_timeout_s "
                        f"({self.target.timeout_s:g} s) to send: the next pass sends them whole; "
                        "raise the timeout"
                    )
                self._chunk_versions = max(1, self._chunk_versions // 2)
                timed_out = True
                break
            # Only now, confirmed by Event Hubs, does the cursor move (a crash before this
            # line publishes the chunk again: same event ids).
            self._commit_cursor(until, len(events))
            if whole:  # sent: the pass's deadline runs from now on
                whole = self._oversize = False
                deadline = time.monotonic() + self.target.timeout_s
            else:
                self._chunk_versions = min(_CHUNK_VERSIONS, self._chunk_versions * 2)
            published += len(events)
            cursor = until
            if cursor >= head:  # batches committed during this pass are taken too
                head = self._lake.version(PREDICTIONS)
        if self._last_error is not None and published:
            self._log(f"Event Hubs available again: {published} events published from the outbox")
            self._last_error = None
        pending = 0 if cursor >= head else self._pending(cursor, head)
        if timed_out:
            self._log(
                f"Event Hubs pass stopped at eventhub.publish_timeout_s "
                f"({self.target.timeout_s:g} s): {published} events published, {pending} wait "
                f"in the outbox (Delta version {cursor + 1}..{head})"
            )
        return PublishResult(
            published=published, pending=pending, cursor=cursor, timed_out=timed_out
        )

    def _pending(self, cursor: int, head: int) -> int:
        """Events of versions ``(cursor, head]``, from the log's statistics (no data read)."""
        return self._lake.appended_rows(PREDICTIONS, cursor, until_version=head)

    def _unavailable(self, exc: BaseException, *, published: int, cursor: int) -> PublishResult:
        """One redacted line; the events stay in the outbox for the next pass."""
        self._drop_client()
        reason = _reason(exc, self.target)
        head = self._lake.version(PREDICTIONS)
        pending = self._pending(cursor, head)
        self._log(
            f"Event Hubs unavailable: {reason}; {pending} events wait in the outbox "
            f"(Delta version {cursor + 1}..{head})"
        )
        self._last_error = reason
        return PublishResult(published=published, pending=pending, cursor=cursor, error=reason)

    def _send(self, events: list[dict[str, Any]], *, deadline: float | None) -> bool:
        """Send ``events``; False when ``deadline`` came first (some may be sent: they go
        again with their chunk, with the same ids). No send starts past the deadline, and
        each gets what is left of it as the SDK's timeout: a pass ends about on time. With
        no deadline, each send gets the whole timeout."""
        # Partition key = image_id, and an EventDataBatch carries ONE partition key, so events
        # are grouped per key and each group is packed into batches up to the hub's size limit
        # (create_batch() asks the service for it). Non-buffered mode on purpose: send_batch()
        # returns only once Event Hubs acknowledged the batch and raises otherwise, so the
        # cursor advances only over confirmed events, with no callback bookkeeping. The cost:
        # about one round trip per distinct image in a chunk. If that ever bounds throughput,
        # buffered_mode=True (the SDK hashes keys to partitions and batches per partition)
        # with on_success counting confirmed events is the next step.
        from azure.eventhub.exceptions import OperationTimeoutError

        if not events:
            return True
        client = self._producer()
        groups: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            groups.setdefault(event["image_id"], []).append(event)

        def send(batch: EventDataBatch) -> bool:
            if deadline is None:
                left = self.target.timeout_s
            else:
                left = deadline - time.monotonic()
                if left < _MIN_SEND_S:
                    return False
            try:
                client.send_batch(batch, timeout=left)
            except OperationTimeoutError:
                # Cut short by the pass's deadline while the hub acknowledges this pass's
                # other sends: the deadline, not an outage (the next pass goes on at once).
                if deadline is not None and self._sent_in_pass:
                    return False
                raise
            self._sent_in_pass = True
            return True

        for key, group in groups.items():
            batch = client.create_batch(partition_key=key)
            for event in group:
                data = _event_data(event)
                try:
                    batch.add(data)
                except ValueError:  # full: send it, start the next one
                    if len(batch) == 0:
                        raise  # one event over the hub's limit: a bug, not an outage
                    if not send(batch):
                        return False
                    batch = client.create_batch(partition_key=key)
                    batch.add(data)
            if not send(batch):
                return False
        return True

    def _commit_cursor(self, version: int, events: int) -> None:
        """The cursor is one row per hub, replaced in one commit (an overwrite): the table
        stays one small file however long the stream runs, and is read whole cheaply. The
        rows of other hubs are kept; the Delta maintenance vacuums the replaced files."""
        others = self._lake.read_arrow(EVENTHUB_OUTBOX)
        others = others.filter(pc.not_equal(others.column("app_id"), self.app_id))
        row = pa.table(
            {
                "app_id": [self.app_id],
                "predictions_version": [version],
                "events": [events],
                "published_at": [dt.datetime.now(dt.UTC)],
            }
        ).cast(SCHEMAS[EVENTHUB_OUTBOX])
        cursor = pa.concat_tables([self._lake.conform(others, EVENTHUB_OUTBOX), row])
        self._lake.replace_arrow(cursor, EVENTHUB_OUTBOX)

    def _producer(self) -> Producer:
        if self._client is None:
            self._client = self._client_factory(self.target)
        return self._client

    def _drop_client(self) -> None:
        """After a failure, start from a fresh client next pass (no half-open connection)."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # closing a broken connection: nothing more to do
                self._log(
                    f"Event Hubs client close failed: {redact(str(exc), known=self.target.secrets)}"
                )

    # -- the stream's hooks --

    def after_batch(self, outcome: object = None) -> None:
        """``on_batch`` hook: wake the publishing thread and return at once (a micro-batch
        never waits for Event Hubs). Without ``start()`` (no thread), the pass runs here."""
        if self._thread is not None:
            self._wanted.set()  # a pass running now goes round once more
            self._wake.set()
        else:
            self._guarded(self.publish_pending)

    def _guarded(self, action: Callable[[], object]) -> object:
        try:
            return action()
        except Exception as exc:  # not an outage (those are handled): say so, keep streaming
            reason = _reason(exc, self.target)
            self._log(f"event publishing failed: {reason}; the events stay in the outbox")
            return None

    def start(self) -> None:
        """Fix where the outbox starts (before the stream's first batch: with no cursor yet,
        at the current version), then run the thread: a pass at once (what a previous run
        left), one after each wake-up, and one every ``retry_interval_s``."""
        if self._thread is not None:
            return
        self._stop.clear()
        try:
            self._start_head = self._lake.version(PREDICTIONS)
            with self._lock:
                self._cursor()
        except Exception as exc:  # storage: the thread's first pass tries again
            self._log(f"event publishing failed: {_reason(exc, self.target)}; retried")

        def loop() -> None:
            while not self._stop.is_set():
                result = self._guarded(self.publish_pending)
                if isinstance(result, PublishResult) and result.timed_out:
                    continue  # a backlog and Event Hubs up: go on at once
                self._wake.wait(self._retry_interval_s)
                self._wake.clear()

        self._thread = threading.Thread(target=loop, name="fruits-eventhubs-outbox", daemon=True)
        self._thread.start()

    def flush(self, timeout_s: float) -> bool:
        """Wake the thread and wait until a pass that started after this call has finished
        (tests); False on timeout. Without a thread, run one here."""
        if self._thread is None:
            self._guarded(self.publish_pending)
            return True
        with self._passes:
            wanted = self._started + 1
        self._wanted.set()
        self._wake.set()
        with self._passes:
            return self._passes.wait_for(lambda: self._finished >= wanted, timeout=timeout_s)

    def close(self) -> None:
        """Stop the thread, publish what is left (``--once``: pass after pass while each
        one stops at its deadline having published some), close the client."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.target.timeout_s * 2)
            self._thread = None
        while True:
            result = self._guarded(self.publish_pending)
            if not isinstance(result, PublishResult) or not result.timed_out:
                break
            if result.published == 0:
                break
        self._drop_client()
