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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from azure.eventhub import EventData, EventDataBatch
from azure.eventhub.exceptions import ConnectError

from fruits.config import Config, load_config
from fruits.errors import ConfigError
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
from fruits.sinks.tables import EVENTHUB_OUTBOX, PREDICTIONS, SCHEMAS
from fruits.status import collect_status
from fruits.upload import plan_upload, upload_to_folder
from streaming.job import run_stream

from .conftest import PROJECT, real_photos

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
    """``EventHubProducerClient``'s create_batch/send_batch/close; up or down."""

    def __init__(self, *, max_size_in_bytes: int | None = None) -> None:
        self.max_size_in_bytes = max_size_in_bytes  # None: the SDK's default (1 MB)
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
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMAS[PREDICTIONS])


def publisher_for(
    root: Path, hub: FakeHub, *, lake: DeltaRsLake | None = None, **kwargs: Any
) -> EventHubsPublisher:
    lake = lake or DeltaRsLake(str(root))
    target = HubTarget(name="predictions", connection_string=FAKE_CONN, timeout_s=5.0)
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
        "Event Hubs unavailable: ConnectError: Failed to initiate the connection: [Errno 111] "
        "Connection refused; 4 events wait in the outbox (Delta version 0..1)"
    ]
    assert hub.events == [] and pending_events(lake, publisher.app_id)[0] == 4

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
