"""Event Hubs publishing: events, the outbox through outages and crashes, secrets.

No Event Hubs runs on these machines, so the SDK client is the boundary: :class:`FakeHub`
implements the three methods the publisher calls on ``EventHubProducerClient`` and builds the
SDK's real ``EventDataBatch`` (real size limits). Delta, the stream and the photos are real.
``tests/test_eventhubs_live.py`` runs against a real hub when ``EVENTHUB_CONNECTION_STR`` is set.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from azure.eventhub import EventData, EventDataBatch
from azure.eventhub.exceptions import ConnectError, OperationTimeoutError

from fruits.config import Config, load_config
from fruits.errors import ConfigError
from fruits.observe.status import collect_status
from fruits.secrets import redact
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.eventhubs import (
    CONTENT_TYPE,
    EventHubsPublisher,
    HubTarget,
    event_id,
    hub_target,
    outbox_cursor,
    pending_events,
    prediction_events,
    sdk_producer,
)
from fruits.sinks.maintenance import maintain_lake, maintenance_policy
from fruits.sinks.tables import EVENTHUB_OUTBOX, PREDICTIONS, SCHEMAS
from fruits.upload import plan_upload, upload_to_folder
from streaming.job import run_stream

from .conftest import PROJECT, WEIGHTS, real_photos

SECRET = "SECRETKEY123fakefakefake="
FAKE_CONN = (
    "Endpoint=sb://fruits-test.servicebus.windows.net/;SharedAccessKeyName=send;"
    f"SharedAccessKey={SECRET};EntityPath=predictions"
)


class RecordingBatch(EventDataBatch):
    """The SDK's batch (its size accounting and limit), remembering what was added."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events: list[EventData] = []

    def add(self, event_data: Any) -> None:
        super().add(event_data)  # raises ValueError when full, as in production
        self.events.append(event_data)


class FakeHub:
    """``EventHubProducerClient``'s create_batch/send_batch/close; up, down or slow.

    ``send_seconds``: how long a send takes; past the ``timeout`` it is given, it gives up
    then with the SDK's ``OperationTimeoutError``, as the real client does."""

    def __init__(self, *, max_size_in_bytes: int | None = None, send_seconds: float = 0) -> None:
        self.max_size_in_bytes = max_size_in_bytes  # None: the SDK's default (1 MB)
        self.send_seconds = send_seconds
        self.delays: list[float] = []  # the next sends' own durations, before send_seconds
        self.timeouts: list[float] = []  # the timeout each send was given
        self.down = False
        self.error_message = "Failed to initiate the connection: [Errno 111] Connection refused"
        self.batches: list[RecordingBatch] = []
        self.delivered = threading.Event()
        self.targets: list[HubTarget] = []
        self.closed = 0

    def factory(self, target: HubTarget) -> FakeHub:
        self.targets.append(target)
        return self

    def _check(self) -> None:
        if self.down:
            raise ConnectError(self.error_message)

    def create_batch(self, *, partition_key: str | None = None) -> EventDataBatch:
        self._check()  # the real one opens the link here, to learn the hub's size limit
        return RecordingBatch(max_size_in_bytes=self.max_size_in_bytes, partition_key=partition_key)

    def send_batch(self, event_data_batch: EventDataBatch, *, timeout: float | None = None) -> None:
        self._check()
        assert isinstance(event_data_batch, RecordingBatch) and timeout
        self.timeouts.append(timeout)
        seconds = self.delays.pop(0) if self.delays else self.send_seconds
        if seconds:
            time.sleep(min(seconds, timeout))
            if seconds > timeout:
                raise OperationTimeoutError("Send operation timed out")
        self.batches.append(event_data_batch)
        self.delivered.set()

    def close(self) -> None:
        self.closed += 1

    @property
    def events(self) -> list[EventData]:
        return [e for b in self.batches for e in b.events]

    def event_ids(self) -> list[str]:
        return [str(e.message_id) for e in self.events]


def partition_key_text(value: str | bytes | None) -> str | None:
    """A partition key: str on an outgoing event, bytes on a received one."""
    return value.decode() if isinstance(value, bytes) else value


def prediction_table(n: int, *, batch_id: int = 0, image_ids: list[str] | None = None) -> pa.Table:
    """``n`` rows with the predictions schema (what the step writes)."""
    now = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
    ids = image_ids or [f"{batch_id:04d}{i:060d}" for i in range(n)]
    rows = [
        {
            "image_id": ids[i],
            "path": f"landing/batch{batch_id}/photo {i}.jpg",
            "label": "Kiwi",
            "confidence": 0.91,
            "top_k": [{"label": "Kiwi", "prob": 0.91}, {"label": "Banana", "prob": 0.05}],
            "is_unknown": False,
            "model_version": 3,
            "uploaded_at": now + dt.timedelta(seconds=i),
            "discovered_at": now + dt.timedelta(seconds=i + 1),
            "predicted_at": now + dt.timedelta(seconds=i + 2),
            "latency_ms": 2000.0,
            "batch_id": batch_id,
            "kind": "kiwi",
            "kind_confidence": 0.93,
            "variety_not_sure": False,
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMAS[PREDICTIONS])


def publisher_for(
    root: Path,
    hub: FakeHub,
    *,
    lake: DeltaRsLake | None = None,
    timeout_s: float = 5.0,
    **kwargs: Any,
) -> EventHubsPublisher:
    """A publisher at the fake hub; ``backfill`` by default: these tests append rows first,
    then publish them (the start-at-the-head default has tests of its own)."""
    lake = lake or DeltaRsLake(str(root))
    target = HubTarget(name="predictions", connection_string=FAKE_CONN, timeout_s=timeout_s)
    kwargs.setdefault("backfill", True)
    return EventHubsPublisher(lake, target, client_factory=hub.factory, **kwargs)


# --- events and secrets (pure) ----------------------------------------------------------------


def test_prediction_events_are_json_with_a_stable_event_id() -> None:
    rows = prediction_table(3)
    events = prediction_events(rows)
    assert [e["image_id"] for e in events] == rows.column("image_id").to_pylist()
    first = events[0]
    assert first["event_id"] == event_id(first["path"], rows[7][0].as_py(), first["image_id"])
    assert first["event_id"] == prediction_events(rows)[0]["event_id"]  # same on a re-publish
    assert len({e["event_id"] for e in events}) == 3
    assert json.loads(json.dumps(events)) == events
    assert first["top_k"] == [{"label": "Kiwi", "prob": 0.91}, {"label": "Banana", "prob": 0.05}]
    assert first["uploaded_at"] == "2026-11-24T12:00:00+00:00"
    assert first["predicted_at"] == "2026-11-24T12:00:02+00:00"
    assert (first["label"], first["model_version"], first["batch_id"]) == ("Kiwi", 3, 0)
    assert (first["kind"], first["kind_confidence"], first["variety_not_sure"]) == (
        "kiwi",
        0.93,
        False,
    )
    # Another arrival of the same photo (same image_id, later upload) is another event.
    again = prediction_table(1, image_ids=[first["image_id"]], batch_id=1)
    assert prediction_events(again)[0]["event_id"] != first["event_id"]


@pytest.mark.parametrize(
    ("text", "kept", "hidden"),
    [
        (FAKE_CONN, "SharedAccessKeyName=send", SECRET),
        (
            "DefaultEndpointsProtocol=https;AccountName=dev;AccountKey=Eby8vdM02xNOcqF==;",
            "AccountName=dev",
            "Eby8vdM02xNOcqF",
        ),
        ("https://a.blob.core.windows.net/c/p.jpg?sv=2024&sig=AbC%2Bd%3D&sp=r", "sv=2024", "AbC"),
        ("SharedAccessSignature sr=sb%3a%2f%2fns&sig=XYZsig&se=17&skn=send", "Shared", "XYZsig"),
        ('{"client_secret": "s3cr3tvalue", "tenant": "t1"}', '"tenant": "t1"', "s3cr3tvalue"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1.payload.sig", "Authorization", "eyJhbGci"),
        ("password=hunter2 user=bob", "user=bob", "hunter2"),
    ],
)
def test_redact_masks_keys_signatures_and_tokens(text: str, kept: str, hidden: str) -> None:
    masked = redact(text)
    assert hidden not in masked and kept in masked and "***" in masked


def test_redact_masks_known_values_anywhere() -> None:
    assert redact(f"auth failed for {SECRET[:16]}", known=[SECRET[:16]]) == "auth failed for ***"


# --- the publisher at the SDK client boundary -------------------------------------------------


def test_events_go_one_partition_key_per_batch_filled_up_to_the_size_limit(tmp_path: Path) -> None:
    lake = DeltaRsLake(str(tmp_path))
    popular = "f" * 64  # one photo uploaded 60 times: 60 events with one partition key
    lake.append_arrow(prediction_table(60, image_ids=[popular] * 60), PREDICTIONS)
    lake.append_arrow(prediction_table(5, batch_id=1), PREDICTIONS)
    hub = FakeHub(max_size_in_bytes=4096)

    result = publisher_for(tmp_path, hub).publish_pending()

    # Version 0 creates the table (both writers create it in a commit of its own).
    assert (result.published, result.pending, result.cursor, result.error) == (65, 0, 2, None)
    repeated = [b for b in hub.batches if b._partition_key == popular]
    assert len(repeated) > 3  # ~700 bytes an event: several batches under 4,096 bytes
    assert all(b.size_in_bytes <= 4096 for b in hub.batches)
    assert sum(len(b.events) for b in repeated) == 60
    assert len(hub.batches) == len(repeated) + 5  # the other five images: one batch each
    for batch in hub.batches:
        for event in batch.events:
            body = event.body_as_json()
            assert batch._partition_key == body["image_id"]
            assert event.message_id == body["event_id"] == event.properties["event_id"]
            assert event.content_type == CONTENT_TYPE
    expected = [e["event_id"] for e in prediction_events(lake.read_arrow(PREDICTIONS))]
    assert sorted(hub.event_ids()) == sorted(expected)
    outbox = lake.read_arrow(EVENTHUB_OUTBOX).to_pylist()
    assert [(r["app_id"], r["predictions_version"], r["events"]) for r in outbox] == [
        ("eventhub/predictions", 2, 65)
    ]


def test_the_retry_thread_delivers_what_an_outage_left_in_the_outbox(tmp_path: Path) -> None:
    lake = DeltaRsLake(str(tmp_path))
    lake.append_arrow(prediction_table(4), PREDICTIONS)
    hub = FakeHub()
    hub.down = True
    logged: list[str] = []
    publisher = publisher_for(tmp_path, hub, retry_interval_s=0.05, log=logged.append)

    failed = publisher.publish_pending()
    assert (failed.published, failed.pending, failed.cursor) == (0, 4, -1)
    assert logged == [
        "Event Hubs backfill: the 4 predictions already in the table are published first",
        "Event Hubs unavailable: ConnectError: Failed to initiate the connection: [Errno 111] "
        "Connection refused; 4 events wait in the outbox (Delta version 0..1)",
    ]
    assert hub.events == [] and pending_events(lake, publisher.app_id, backfill=True)[0] == 4

    publisher.start()  # retries every 50 ms while the stream runs
    hub.down = False
    assert hub.delivered.wait(timeout=30)
    publisher.close()  # joins the thread; its last pass finds nothing left
    assert sorted(hub.event_ids()) == sorted(
        e["event_id"] for e in prediction_events(lake.read_arrow(PREDICTIONS))
    )
    assert pending_events(lake, publisher.app_id) == (0, 1, 1)
    assert any("available again: 4 events" in line for line in logged)


class CrashingLake(DeltaRsLake):
    """The real lake, killed once between the send and the cursor commit."""

    def replace_arrow(self, data: pa.Table, table: str) -> None:
        if table == EVENTHUB_OUTBOX:
            raise RuntimeError("process killed before the cursor commit")
        super().replace_arrow(data, table)


def test_a_crash_between_send_and_cursor_commit_republishes_with_the_same_event_ids(
    tmp_path: Path,
) -> None:
    lake = DeltaRsLake(str(tmp_path))
    lake.append_arrow(prediction_table(3), PREDICTIONS)
    hub = FakeHub()
    with pytest.raises(RuntimeError, match="killed"):
        publisher_for(tmp_path, hub, lake=CrashingLake(str(tmp_path))).publish_pending()
    assert len(hub.events) == 3 and outbox_cursor(lake, "eventhub/predictions") == -1

    restarted = publisher_for(tmp_path, hub).publish_pending()  # the next run
    assert (restarted.published, restarted.cursor) == (3, 1)
    ids = hub.event_ids()
    assert len(ids) == 6 and len(set(ids)) == 3  # at least once: duplicates share the id
    assert set(ids) == {e["event_id"] for e in prediction_events(lake.read_arrow(PREDICTIONS))}
    assert publisher_for(tmp_path, hub).publish_pending().published == 0  # nothing left


def test_secrets_never_reach_logs_errors_or_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = DeltaRsLake(str(tmp_path))
    lake.append_arrow(prediction_table(2), PREDICTIONS)
    hub = FakeHub()
    hub.down = True
    hub.error_message = f"CBS token rejected for {FAKE_CONN} (key {SECRET})"
    publisher = publisher_for(tmp_path, hub)
    failed = publisher.publish_pending()
    hub.down = False
    published = publisher.publish_pending()
    # The real SDK too: a refused local endpoint, the key in the connection string.
    emulator = f"Endpoint=sb://localhost;SharedAccessKeyName=send;SharedAccessKey={SECRET};UseDevelopmentEmulator=true"
    real = EventHubsPublisher(
        lake,
        HubTarget(name="predictions", connection_string=emulator, timeout_s=3.0),
        client_factory=sdk_producer,
        backfill=True,
    )
    lake.append_arrow(prediction_table(1, batch_id=1), PREDICTIONS)
    refused = real.publish_pending()
    real.close()
    logging.getLogger("azure.eventhub._client_base").warning("retrying with %s", emulator)
    with pytest.raises(ConfigError) as bad_entity:
        hub_target(
            load_config(PROJECT / "conf" / "local.yaml", environ={"FRUITS__EVENTHUB__NAME": "x"}),
            environ={"EVENTHUB_CONNECTION_STR": FAKE_CONN},
        )

    captured = capsys.readouterr()
    assert failed.error and published.published == 2 and refused.error
    assert (
        "Event Hubs unavailable: ConnectError: CBS token rejected for *** (key ***)" in captured.err
    )
    assert "retrying with Endpoint=sb://localhost" in captured.err
    seen = [
        captured.out,
        captured.err,
        failed.error,
        refused.error,
        str(bad_entity.value),
        repr(publisher.target),
        str(lake.read_arrow(EVENTHUB_OUTBOX).to_pylist()),
        str([e.body_as_str() for e in hub.events]),
    ]
    for text in seen:
        assert SECRET not in text and SECRET[:12] not in text


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            f"eventhub:\n  connection_string_env: '{FAKE_CONN}'\n",
            "'eventhub.connection_string_env' must be the NAME of an environment variable",
        ),
        ("eventhub:\n  publish_timeout_s: 0\n", "'eventhub.publish_timeout_s' must be positive"),
        (
            "eventhub:\n  fully_qualified_namespace: sb://x.servicebus.windows.net/\n",
            "'eventhub.fully_qualified_namespace' must be a host name",
        ),
        ("eventhub:\n  connection_string: x\n", "unknown config key 'eventhub.connection_string'"),
    ],
)
def test_bad_eventhub_config_fails_with_one_line_and_no_secret(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert message in str(error.value) and "\n" not in str(error.value)
    assert SECRET not in str(error.value)


def test_enabled_without_a_connection_string_or_namespace_says_which_variable(
    tmp_path: Path,
) -> None:
    config = load_config(
        PROJECT / "conf" / "local.yaml", environ={"FRUITS__EVENTHUB__ENABLED": "true"}
    )
    assert config.eventhub.enabled and config.eventhub.name == "predictions"
    with pytest.raises(ConfigError, match=r"no connection string in \$EVENTHUB_CONNECTION_STR"):
        hub_target(config, environ={})
    target = hub_target(config, environ={"EVENTHUB_CONNECTION_STR": FAKE_CONN})
    assert target.connection_string == FAKE_CONN and SECRET not in repr(target)
    # A malformed string fails at start, with one line, through the real SDK client.
    with pytest.raises(ConfigError, match="connection string is not valid") as malformed:
        EventHubsPublisher.from_config(config, environ={"EVENTHUB_CONNECTION_STR": SECRET})
    assert SECRET not in str(malformed.value)


# --- a lake with history, the pass's deadline, the pending count ------------------------------


def _append(lake: DeltaRsLake, batches: range, *, rows: int = 2) -> None:
    """One commit per batch, as the stream's micro-batches make them."""
    for batch in batches:
        assert lake.append_arrow(prediction_table(rows, batch_id=batch), PREDICTIONS)


def _stored(lake: DeltaRsLake) -> set[str]:
    """The data files in the predictions folder, referenced or not."""
    return {p.name for p in Path(lake.path(PREDICTIONS)).glob("*.parquet")}


def _hub_config(make_config: Callable[..., Config], root: Path, **env: str) -> Config:
    """Event Hubs on, vacuum at once (retention 0): what a vacuum could break, it does."""
    return make_config(
        root,
        FRUITS__EVENTHUB__ENABLED="true",
        FRUITS__MAINTENANCE__VACUUM_RETENTION_HOURS="0",
        FRUITS__MAINTENANCE__LOG_RETENTION_HOURS="3",
        **env,
    )


def test_enabling_event_hubs_on_a_lake_with_50_batches_publishes_only_the_next_ones(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = _hub_config(make_config, tmp_path)
    lake = DeltaRsLake(config.path("lake"))
    _append(lake, range(50))
    history = lake.version(PREDICTIONS)  # 50 commits, after the table's creation
    hub, logged = FakeHub(), []
    publisher = EventHubsPublisher.from_config(
        config,
        lake=lake,
        environ={"EVENTHUB_CONNECTION_STR": FAKE_CONN},
        client_factory=hub.factory,
        log=logged.append,
    )
    publisher.start()
    try:
        assert publisher.flush(timeout_s=60)
        assert hub.events == [] and outbox_cursor(lake, publisher.app_id) == history == 50
        assert pending_events(lake, publisher.app_id) == (0, 50, 50)
        assert logged[0].startswith(
            "Event Hubs outbox starts at predictions version 50: the 100 predictions"
        )
        # Maintenance between enabling and the next batches, retention 0: the history's
        # files are compacted and vacuumed (the outbox will never read them).
        results = {r.table: r for r in maintain_lake(config, lake=lake)}
        assert results[PREDICTIONS].files_compacted == 50
        assert len(_stored(lake)) == 1
        _append(lake, range(50, 53))
        publisher.after_batch()
        assert publisher.flush(timeout_s=60)
    finally:
        publisher.close()
    new = lake.read_arrow(PREDICTIONS).filter(pc.field("batch_id") >= 50)
    assert new.num_rows == 6 and lake.read_arrow(PREDICTIONS).num_rows == 106
    assert sorted(hub.event_ids()) == sorted(e["event_id"] for e in prediction_events(new))
    head = lake.version(PREDICTIONS)  # the batches' commits and the maintenance's
    assert pending_events(lake, publisher.app_id) == (0, head, head)
    assert not any("unavailable" in line or "failed" in line for line in logged)


def test_backfill_publishes_the_history_once_though_a_vacuum_ran_before_its_first_pass(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = _hub_config(make_config, tmp_path, FRUITS__EVENTHUB__BACKFILL="true")
    assert config.eventhub.backfill
    lake = DeltaRsLake(config.path("lake"))
    _append(lake, range(20))
    history = _stored(lake)
    # No cursor yet: the maintenance keeps every commit from the first on...
    assert maintenance_policy(config, lake, PREDICTIONS).keep_from_version == 0
    result = {r.table: r for r in maintain_lake(config, lake=lake)}[PREDICTIONS]
    assert result.files_compacted == 20 and result.files_vacuumed == 0
    assert history < _stored(lake)
    hub = FakeHub()
    publisher = EventHubsPublisher.from_config(
        config,
        lake=lake,
        environ={"EVENTHUB_CONNECTION_STR": FAKE_CONN},
        client_factory=hub.factory,
    )
    # ...which the backfill reads, commit by commit (3 chunks of 8 versions).
    first = publisher.publish_pending()
    assert (first.published, first.pending, first.error) == (40, 0, None)
    assert publisher.publish_pending().published == 0  # once, and the compaction is no row
    publisher.close()
    rows = lake.read_arrow(PREDICTIONS)
    assert sorted(hub.event_ids()) == sorted(e["event_id"] for e in prediction_events(rows))
    assert len(hub.event_ids()) == len(set(hub.event_ids())) == 40
    # Published: the next pass vacuums the history's files.
    maintain_lake(config, lake=lake)
    assert not history & _stored(lake) and len(_stored(lake)) == 1


def test_fruits_maintain_with_event_hubs_on_keeps_the_files_not_published_yet(
    make_config: Callable[..., Config],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The bundle's job: `fruits maintain` in a process of its own, from the configuration
    alone, while Event Hubs has been down since the stream enabled it."""
    from fruits.cli import main

    env = {
        "FRUITS__EVENTHUB__ENABLED": "true",
        "FRUITS__MAINTENANCE__VACUUM_RETENTION_HOURS": "0",
        "FRUITS__MAINTENANCE__LOG_RETENTION_HOURS": "3",
    }
    config = make_config(tmp_path, **env)
    lake = DeltaRsLake(config.path("lake"))
    _append(lake, range(3))  # the history
    hub = FakeHub()
    hub.down = True
    publisher = EventHubsPublisher.from_config(
        config,
        lake=lake,
        environ={"EVENTHUB_CONNECTION_STR": FAKE_CONN},
        client_factory=hub.factory,
    )
    publisher.start()  # the stream: the outbox starts at version 3
    publisher.close()
    _append(lake, range(3, 7))  # four batches predicted while Event Hubs is down
    assert publisher.publish_pending().error
    waiting = _stored(lake)
    for name, value in {
        "FRUITS_ROOT": str(tmp_path),
        "FRUITS_WEIGHTS": str(WEIGHTS),
        **env,
    }.items():
        monkeypatch.setenv(name, value)

    assert main(["maintain"]) == 0

    tables = {t["table"]: t for t in json.loads(capsys.readouterr().out.splitlines()[-1])["tables"]}
    summary = tables[PREDICTIONS]
    assert summary["files_compacted"] == 7 and summary["files_after"] == 1
    assert summary["files_vacuumed"] == 0 and summary["vacuum_retention_hours"] >= 1
    assert summary["full_vacuum"]
    assert waiting < _stored(lake)  # every removed file kept, beside the compacted one
    hub.down = False
    assert publisher.publish_pending().published == 8
    publisher.close()
    unpublished = lake.read_arrow(PREDICTIONS).filter(pc.field("batch_id") >= 3)
    assert sorted(hub.event_ids()) == sorted(e["event_id"] for e in prediction_events(unpublished))


def test_a_pass_during_an_outage_counts_what_waits_from_the_log_not_the_data_files(
    tmp_path: Path,
) -> None:
    lake = DeltaRsLake(str(tmp_path))
    _append(lake, range(2))
    hub, logged = FakeHub(), []
    publisher = publisher_for(tmp_path, hub, log=logged.append)
    assert publisher.publish_pending().published == 4
    cursor = outbox_cursor(lake, publisher.app_id)
    _append(lake, range(2, 20))  # 18 batches, 36 events wait
    head = lake.version(PREDICTIONS)
    # Delete the data files of every pending commit past the first chunk (8 versions, read to
    # be sent): a count that opened them would fail.
    folder = Path(lake.path(PREDICTIONS))
    for version in range(cursor + 9, head + 1):
        for action in lake._commit_actions(PREDICTIONS, version):
            if "add" in action:
                (folder / unquote(action["add"]["path"])).unlink()
    hub.down = True
    for _ in range(2):  # the second pass counts the commits it already read from memory
        failed = publisher.publish_pending()
        assert (failed.published, failed.pending, failed.cursor) == (0, 36, cursor)
        assert failed.error and logged[-1].endswith(
            f"36 events wait in the outbox (Delta version {cursor + 1}..{head})"
        )
    # `fruits status`: the same count, from a fresh lake (no memory of earlier passes).
    assert pending_events(DeltaRsLake(str(tmp_path)), publisher.app_id) == (36, cursor, head)


def test_a_pass_ends_at_its_timeout_inside_the_send_loop_even_when_a_send_blocks(
    tmp_path: Path,
) -> None:
    lake = DeltaRsLake(str(tmp_path))
    lake.append_arrow(prediction_table(20), PREDICTIONS)  # one micro-batch, 20 photos: 20 sends
    hub, logged = FakeHub(send_seconds=0.4), []
    publisher = publisher_for(tmp_path, hub, timeout_s=2.0, log=logged.append)

    started = time.monotonic()
    slow = publisher.publish_pending()  # 20 sends of 0.4 s would take 8 s
    assert time.monotonic() - started < 3.5
    assert slow.timed_out and (slow.published, slow.pending, slow.cursor) == (0, 20, -1)
    assert slow.error is None and 3 <= len(hub.batches) <= 6
    assert "stopped at eventhub.publish_timeout_s (2 s): 0 events published, 20 wait" in logged[-1]

    # Two sends take 0.8 s each, then one blocks: it is given what is left of the pass.
    hub.batches.clear()
    hub.timeouts.clear()
    hub.delays = [0.8, 0.8, 60.0]
    started = time.monotonic()
    blocked = publisher.publish_pending()
    assert time.monotonic() - started < 3.0  # with a full 2 s for the blocked send: 3.6 s
    assert blocked.timed_out and blocked.error is None and blocked.cursor == -1
    assert hub.timeouts[2] < 0.6 and len(hub.batches) == 2
    # A hub that acknowledges nothing in a pass is down: an outage, retried later.
    hub.delays = [60.0]
    down = publisher.publish_pending()
    assert down.error and "OperationTimeoutError" in down.error and not down.timed_out

    hub.send_seconds = 0  # fast again: the whole micro-batch goes, the cursor moves
    done = publisher.publish_pending()
    assert (done.published, done.pending, done.cursor, done.timed_out) == (20, 0, 1, False)
    expected = {e["event_id"] for e in prediction_events(lake.read_arrow(PREDICTIONS))}
    assert set(hub.event_ids()) == expected  # the chunk's earlier sends went again: same ids


def test_a_micro_batch_longer_to_send_than_a_pass_goes_whole_in_the_next_one(
    tmp_path: Path,
) -> None:
    lake = DeltaRsLake(str(tmp_path))
    _append(lake, range(1))
    hub, logged = FakeHub(), []
    publisher = publisher_for(tmp_path, hub, timeout_s=1.0, log=logged.append)
    assert publisher.publish_pending().cursor == 1
    lake.append_arrow(prediction_table(8, batch_id=1), PREDICTIONS)  # 8 sends of 0.3 s: 2.4 s
    hub.send_seconds = 0.3
    cut = publisher.publish_pending()
    assert cut.timed_out and cut.cursor == 1 and "sends them whole" in logged[-2]
    whole = publisher.publish_pending()  # each send still bounded by the 1 s timeout
    assert (whole.published, whole.pending, whole.cursor) == (8, 0, 2)
    sent = hub.event_ids()[2:]
    assert len(set(sent)) == 8 and len(sent) <= 8 + 4  # what the cut pass sent goes once more


def test_the_batch_hook_only_wakes_the_publishing_thread(tmp_path: Path) -> None:
    lake = DeltaRsLake(str(tmp_path))
    hub = FakeHub(send_seconds=1.0)
    publisher = publisher_for(tmp_path, hub, lake=lake, backfill=False, retry_interval_s=60)
    publisher.start()  # no table yet: the outbox starts at -1, before the first batch
    try:
        lake.append_arrow(prediction_table(3), PREDICTIONS)  # a micro-batch commits...
        started = time.monotonic()
        publisher.after_batch()  # ...and its hook returns at once: 3 sends of 1 s elsewhere
        assert time.monotonic() - started < 0.5
        assert publisher.flush(timeout_s=30)
        assert len(hub.events) == 3
    finally:
        publisher.close()
    assert pending_events(lake, publisher.app_id) == (0, 1, 1)


# --- through the real streaming query ---------------------------------------------------------


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
def publisher(stream_config: Config, hub: FakeHub) -> Iterator[EventHubsPublisher]:
    config = dataclasses.replace(
        stream_config, eventhub=dataclasses.replace(stream_config.eventhub, enabled=True)
    )
    publisher = EventHubsPublisher.from_config(
        config, environ={"EVENTHUB_CONNECTION_STR": FAKE_CONN}, client_factory=hub.factory
    )
    publisher.start()  # before the query, as run_stream does
    yield publisher
    publisher.close()


@pytest.fixture
def on_batch(publisher: EventHubsPublisher) -> Any:
    """memory_query's hook: the publisher, as run_stream wires it."""
    return publisher.after_batch


def _photo_rows(label: str, n: int, skip: int) -> list[tuple[str, bytes, dt.datetime]]:
    now = dt.datetime.now(dt.UTC)
    return [
        (f"mem://{label}/{p.name}", p.read_bytes(), now)
        for p in real_photos("Test", label, n, skip=skip)
    ]


@pytest.mark.spark
def test_an_event_hubs_outage_commits_predictions_and_delivers_every_event_after_recovery(
    memory_query: Any,
    stream_config: Config,
    hub: FakeHub,
    publisher: EventHubsPublisher,
    capsys: pytest.CaptureFixture[str],
) -> None:
    feed, query, step = memory_query
    lake = DeltaRsLake(stream_config.path("lake"))
    hub.down = True
    feed.add(_photo_rows("Kiwi", 2, skip=1))
    query.processAllAvailable()
    assert publisher.flush(timeout_s=60)  # the batch woke the publisher's thread

    assert lake.read_arrow(PREDICTIONS).num_rows == 2  # Delta committed regardless
    assert hub.events == []
    # Spark's writer creates the table in a commit of its own before the first append.
    first = lake.version(PREDICTIONS)
    assert pending_events(lake, publisher.app_id) == (2, -1, first)
    assert f"2 events wait in the outbox (Delta version 0..{first})" in capsys.readouterr().err
    assert collect_status(stream_config)["predictions_rows"] == 2

    hub.down = False  # recovery: the next micro-batch's hook publishes both batches
    feed.add(_photo_rows("Banana", 1, skip=2))
    query.processAllAvailable()
    assert publisher.flush(timeout_s=60)

    rows = lake.read_arrow(PREDICTIONS)
    assert rows.num_rows == 3 and query.isActive
    expected = {e["event_id"]: e for e in prediction_events(rows)}
    assert sorted(hub.event_ids()) == sorted(expected)  # every one, exactly once here
    for event in hub.events:
        body = event.body_as_json()
        assert body == expected[body["event_id"]]
        assert partition_key_text(event.partition_key) == body["image_id"]
    assert pending_events(lake, publisher.app_id) == (0, first + 1, first + 1)
    assert [o.predictions for o in step.outcomes] == [
        2,
        1,
    ]


@pytest.mark.spark
def test_stream_once_publishes_the_events_before_exit(
    stream_config: Config, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTHUB_CONNECTION_STR", raising=False)  # a developer's live hub
    config = dataclasses.replace(
        stream_config,
        eventhub=dataclasses.replace(
            stream_config.eventhub,
            enabled=True,
            fully_qualified_namespace="fruits-test.servicebus.windows.net",  # managed identity
        ),
    )
    photos = [str(p) for p in real_photos("Test", "Strawberry", 2, skip=1)]
    upload_to_folder(plan_upload(photos, ["jpg"]), config.path("landing"))

    result = run_stream(config, once=True, eventhub_client=hub.factory)

    assert result["predictions"] == 2
    rows = DeltaRsLake(config.path("lake")).read_arrow(PREDICTIONS)
    assert sorted(hub.event_ids()) == sorted(e["event_id"] for e in prediction_events(rows))
    assert hub.targets[0].connection_string is None  # the namespace: DefaultAzureCredential
    assert hub.closed >= 1
    status = collect_status(config)
    published = DeltaRsLake(config.path("lake")).version(PREDICTIONS)  # one append (+ creation)
    assert (status["eventhub_pending_events"], status["eventhub_published_version"]) == (
        0,
        published,
    )
