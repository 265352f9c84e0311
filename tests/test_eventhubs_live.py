"""Event Hubs for real: publish a few prediction events and read them back.

Runs only when ``EVENTHUB_CONNECTION_STR`` is set: a real namespace (a Send+Listen policy), or
the official emulator of ``docker/compose.yaml``
(``Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;
SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true``). The hub is the connection
string's ``EntityPath``, else ``EVENTHUB_NAME`` (default ``eh1``, the emulator's). Reads with
the ``$Default`` consumer group (``EVENTHUB_CONSUMER_GROUP`` overrides it).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.eventhubs import EventHubsPublisher, HubTarget, prediction_events
from fruits.sinks.tables import PREDICTIONS

from .test_eventhubs import partition_key_text, prediction_table

CONNECTION = os.environ.get("EVENTHUB_CONNECTION_STR", "")

pytestmark = pytest.mark.skipif(
    not CONNECTION,
    reason="EVENTHUB_CONNECTION_STR is not set (a real Event Hubs namespace or the emulator)",
)


def _hub_name() -> str:
    for part in CONNECTION.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "entitypath" and value.strip():
            return value.strip()
    return os.environ.get("EVENTHUB_NAME", "eh1")


def test_published_events_can_be_read_back_with_their_event_ids(tmp_path: Path) -> None:
    from azure.eventhub import EventHubConsumerClient

    lake = DeltaRsLake(str(tmp_path))
    run = uuid.uuid4().hex  # this run's image ids: other events on the hub are ignored
    rows = prediction_table(3, image_ids=[f"{run}{i:032d}" for i in range(3)])
    lake.append_arrow(rows, PREDICTIONS)
    expected = {e["event_id"]: e for e in prediction_events(rows)}
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)  # clock skew margin

    publisher = EventHubsPublisher(
        lake,
        HubTarget(name=_hub_name(), connection_string=CONNECTION, timeout_s=30.0),
        backfill=True,  # the rows appended above, before the publisher's first pass
    )
    result = publisher.publish_pending()
    publisher.close()
    assert (result.published, result.pending, result.error) == (3, 0, None)

    received: dict[str, Any] = {}
    done = threading.Event()
    consumer = EventHubConsumerClient.from_connection_string(
        CONNECTION,
        consumer_group=os.environ.get("EVENTHUB_CONSUMER_GROUP", "$Default"),
        eventhub_name=_hub_name(),
    )

    def on_event(partition_context: Any, event: Any) -> None:
        if event is not None and event.message_id in expected:
            received[str(event.message_id)] = (event.body_as_json(), event.partition_key)
            if len(received) == len(expected):
                done.set()

    reader = threading.Thread(
        target=consumer.receive,
        kwargs={"on_event": on_event, "starting_position": since, "max_wait_time": 5},
        daemon=True,
    )
    reader.start()
    try:
        assert done.wait(timeout=120), f"received {len(received)} of {len(expected)} events"
    finally:
        consumer.close()
        reader.join(timeout=30)
    for event_id, (body, partition_key) in received.items():
        assert body == expected[event_id]
        assert partition_key_text(partition_key) == body["image_id"]
