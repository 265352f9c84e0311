"""The Delta tables' contracts (DESIGN.md): names and Arrow schemas, one place for both writers."""

from __future__ import annotations

import pyarrow as pa

__all__ = ["EVENTHUB_OUTBOX", "FEATURES", "PREDICTIONS", "QUARANTINE", "SCHEMAS"]

FEATURES = "features"
PREDICTIONS = "predictions"
QUARANTINE = "quarantine"
# The Event Hubs outbox cursor (fruits/sinks/eventhubs.py): up to which Delta version of
# `predictions` the events are published; one row per hub, replaced at each published chunk
# (tables written by older releases hold a row per chunk: the cursor is their largest).
EVENTHUB_OUTBOX = "eventhub_outbox"

_TIMESTAMP = pa.timestamp("us", tz="UTC")

SCHEMAS: dict[str, pa.Schema] = {
    FEATURES: pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),  # sha256 of the photo's bytes
            pa.field("path", pa.string()),
            pa.field("label", pa.string()),
            pa.field("split", pa.string()),
            pa.field("features", pa.list_(pa.float32())),
            pa.field("extractor", pa.string(), nullable=False),
            pa.field("computed_at", _TIMESTAMP),
            # The file as featurized: the cache's lookup key is (path, size_bytes, modified_at),
            # so a photo is not read again to be recognised. Added later: null in rows written
            # before (those photos are featurized once more, then found by this key).
            pa.field("size_bytes", pa.int64()),
            pa.field("modified_at", _TIMESTAMP),
        ]
    ),
    PREDICTIONS: pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("path", pa.string(), nullable=False),
            pa.field("label", pa.string()),
            pa.field("confidence", pa.float64()),
            pa.field(
                "top_k",
                pa.list_(
                    pa.struct([pa.field("label", pa.string()), pa.field("prob", pa.float64())])
                ),
            ),
            pa.field("is_unknown", pa.bool_()),
            pa.field("model_version", pa.int64()),
            pa.field("uploaded_at", _TIMESTAMP),
            pa.field("discovered_at", _TIMESTAMP),
            pa.field("predicted_at", _TIMESTAMP),
            pa.field("latency_ms", pa.float64()),
            pa.field("batch_id", pa.int64()),
            # The answer's kind level (fruits/model/answers.py): the most probable kind, its
            # varieties' summed probability, and "kind known, variety not sure". Added later:
            # null in rows written before (their `label` is the whole answer).
            pa.field("kind", pa.string()),
            pa.field("kind_confidence", pa.float64()),
            pa.field("variety_not_sure", pa.bool_()),
        ]
    ),
    QUARANTINE: pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),
            pa.field("image_id", pa.string()),  # null when the bytes could not be read
            pa.field("reason", pa.string(), nullable=False),
            pa.field("detail", pa.string()),
            pa.field("size_bytes", pa.int64()),
            pa.field("uploaded_at", _TIMESTAMP),
            pa.field("detected_at", _TIMESTAMP),
            pa.field("batch_id", pa.int64()),
        ]
    ),
    EVENTHUB_OUTBOX: pa.schema(
        [
            pa.field("app_id", pa.string(), nullable=False),  # "eventhub/<hub name>"
            pa.field("predictions_version", pa.int64(), nullable=False),  # published up to
            pa.field("events", pa.int64()),  # events sent in the last chunk
            pa.field("published_at", _TIMESTAMP),
        ]
    ),
}
