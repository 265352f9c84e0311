"""Event Grid's ``Microsoft.Storage.BlobCreated`` events, as they arrive on a Storage Queue.

:func:`parse_blob_events` reads them for the Blob source's notification mode;
:func:`blob_created_message` writes one, for places with no Event Grid (Azurite, the tests,
``bench/azure_checks.py``).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from fruits.azure import plain_etag
from fruits.sources.names import content_type

__all__ = ["BlobCreated", "blob_created_message", "parse_blob_events"]


@dataclass(frozen=True)
class BlobCreated:
    """What a ``Microsoft.Storage.BlobCreated`` event says about a blob."""

    container: str
    name: str
    etag: str | None
    size: int | None


def parse_blob_events(text: str) -> list[BlobCreated] | None:
    """The BlobCreated events in one queue message (Event Grid schema), or None when the
    message is not Event Grid JSON at all.

    Event Grid writes one event per message, Base64-encoded JSON by default; plain JSON and a
    JSON array of events are accepted too. Other event types (BlobDeleted...) give ``[]``.
    """
    payload: Any
    try:
        payload = json.loads(text)
    except ValueError:
        try:
            payload = json.loads(base64.b64decode(text, validate=True))
        except (ValueError, binascii.Error):
            return None
    events = payload if isinstance(payload, list) else [payload]
    found: list[BlobCreated] = []
    for event in events:
        if not isinstance(event, dict) or "eventType" not in event:
            return None
        if event["eventType"] != "Microsoft.Storage.BlobCreated":
            continue
        # subject: /blobServices/default/containers/<container>/blobs/<name>
        match = re.fullmatch(
            r"/blobServices/default/containers/([^/]+)/blobs/(.+)", str(event.get("subject", ""))
        )
        if not match:
            return None
        data = event.get("data") or {}
        if data.get("api") == "CreateFile":
            # An account with a hierarchical namespace (ADLS Gen2) raises BlobCreated twice for
            # a DFS upload: at CreateFile, of an empty file, and at FlushWithClose, with its
            # content. Only the second is the upload.
            continue
        size = data.get("contentLength")
        found.append(
            BlobCreated(
                container=match.group(1),
                name=match.group(2),
                etag=plain_etag(data["eTag"]) if data.get("eTag") else None,
                size=int(size) if isinstance(size, int) else None,
            )
        )
    return found


def blob_created_message(account: str, container: str, name: str, etag: str, size: int) -> str:
    """A queue message as Event Grid writes one for a new blob (Base64-encoded JSON, one
    ``Microsoft.Storage.BlobCreated`` event): what tests and the emulated setup put on the
    queue, since Azurite has no Event Grid."""

    event = {
        "topic": f"/subscriptions/-/resourceGroups/-/providers/Microsoft.Storage/"
        f"storageAccounts/{account}",
        "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": dt.datetime.now(dt.UTC).isoformat(),
        "id": str(uuid.uuid4()),
        "data": {
            "api": "PutBlob",
            "eTag": etag,
            "contentType": content_type(name),
            "contentLength": size,
            "blobType": "BlockBlob",
            "url": f"https://{account}.blob.core.windows.net/{container}/{name}",
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }
    return base64.b64encode(json.dumps(event).encode()).decode()
