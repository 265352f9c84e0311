"""Discovery bookkeeping and event parsing: pure, no Spark, no Azure."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

from fruits.azure import BlobInfo
from fruits.sources.discovery import DiscoveryState
from fruits.sources.events import parse_blob_events
from fruits.sources.names import NameFilter

T0 = dt.datetime(2026, 11, 24, 12, 0, 0, tzinfo=dt.UTC)


def blob(name: str, seconds: float = 0, etag: str = "e1", size: int = 10) -> BlobInfo:
    return BlobInfo(name, etag, size, T0 + dt.timedelta(seconds=seconds))


def test_a_blob_is_offered_once_and_a_rewrite_is_a_new_arrival() -> None:
    state = DiscoveryState(max_file_age_s=3600)
    assert [a.seq for a in state.add([blob("a.jpg"), blob("b.jpg")])] == [1, 2]
    # The same listing again, and a duplicate event: nothing new.
    assert state.add([blob("a.jpg"), blob("b.jpg"), blob("a.jpg")]) == []
    rewritten = state.add([blob("a.jpg", 5, etag="e2")])
    assert [(a.seq, a.etag) for a in rewritten] == [(3, "e2")]


def test_late_same_second_and_out_of_order_blobs_are_not_lost() -> None:
    state = DiscoveryState(max_file_age_s=3600)
    state.add([blob("new.jpg", 100)])
    # Found later, but modified earlier than what was already seen; and two in one second.
    late = state.add([blob("old.jpg", 10), blob("twin1.jpg", 100), blob("twin2.jpg", 100)])
    assert sorted(a.name for a in late) == ["old.jpg", "twin1.jpg", "twin2.jpg"]


def test_state_stays_bounded_by_the_retention_window() -> None:
    state = DiscoveryState(max_file_age_s=60)
    state.add([blob(f"{i}.jpg", i / 2) for i in range(100)])  # within 50 s
    state.commit(state.last_seq)
    assert len(state.seen) == 100
    state.add([blob("later.jpg", 1000)])
    state.commit(state.last_seq)
    # Keys older than high-water - 60 s are forgotten; blobs that old are ignored, not redone.
    assert list(state.seen) == ["later.jpg\ne1"]
    assert state.add([blob("0.jpg", 0)]) == []
    assert state.ignored_too_old == 1
    assert state.pending == []


def test_end_offset_respects_files_bytes_and_the_available_now_target() -> None:
    state = DiscoveryState(max_file_age_s=3600)
    state.add([blob(f"{i}.jpg", i, size=100) for i in range(10)])
    assert state.end_offset(0, max_files=4, max_bytes=None) == 4
    assert state.end_offset(4, max_files=None, max_bytes=250) == 6
    # A photo larger than the byte cap still goes, alone: the stream never stalls on it.
    assert state.end_offset(6, max_files=None, max_bytes=50) == 7
    state.target = 8
    assert state.end_offset(7, max_files=None, max_bytes=None) == 8
    assert state.end_offset(8, max_files=None, max_bytes=None) == 8
    assert [a.seq for a in state.between(2, 5)] == [3, 4, 5]


def test_include_existing_false_remembers_without_offering() -> None:
    state = DiscoveryState(max_file_age_s=3600)
    assert state.add([blob("old.jpg")], offer=False) == []
    assert state.add([blob("old.jpg"), blob("new.jpg", 1)])[0].name == "new.jpg"


def test_state_survives_a_save_and_load(tmp_path: Path) -> None:
    state = DiscoveryState(max_file_age_s=3600)
    state.add([blob("a.jpg"), blob("b.jpg", 1)])
    state.pending[0].receipts.append(["message-1", "receipt-1"])
    state.target = 2
    state.save(tmp_path / "state.json")
    loaded = DiscoveryState.load(tmp_path / "state.json", max_file_age_s=3600)
    assert loaded.pending == state.pending and loaded.seen == state.seen
    assert loaded.target is None  # each --once run sets its own


def _event(subject: str, event_type: str = "Microsoft.Storage.BlobCreated") -> dict[str, object]:
    return {
        "topic": "/subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/storageAccounts/z",
        "subject": subject,
        "eventType": event_type,
        "id": "1",
        "data": {"api": "PutBlob", "eTag": "0x8D", "contentLength": 1234, "blobType": "BlockBlob"},
        "dataVersion": "",
        "metadataVersion": "1",
        "eventTime": "2026-11-24T12:00:00Z",
    }


def test_blob_created_events_in_every_encoding_event_grid_uses() -> None:
    subject = "/blobServices/default/containers/landing/blobs/photos/Kiwi/1 a.jpg"
    plain = json.dumps(_event(subject))
    encoded = base64.b64encode(plain.encode()).decode()
    for text in (plain, encoded, json.dumps([_event(subject)])):
        (event,) = parse_blob_events(text) or []
        assert (event.container, event.name, event.etag, event.size) == (
            "landing",
            "photos/Kiwi/1 a.jpg",
            "0x8D",
            1234,
        )
    assert parse_blob_events(json.dumps(_event(subject, "Microsoft.Storage.BlobDeleted"))) == []
    assert parse_blob_events("not an event") is None
    assert parse_blob_events(json.dumps({"hello": "world"})) is None


def test_name_filter_extensions_hidden_names_and_globs() -> None:
    accept = NameFilter(["jpg", "png"])
    assert accept("photos/Kiwi/1.JPG") and accept("a/b.png")
    assert not accept("a/.hidden.jpg") and not accept("a/_tmp.jpg") and not accept("a/b.txt")
    assert not accept("photos/")
    # Spark's recursive listing enters no hidden folder below the landing: neither does Blob's.
    under = NameFilter(["jpg"], under="_landing/")
    assert under("_landing/sub/a.jpg") and not under("_landing/.uploading/a.jpg")
    assert not under("_landing/sub/_tmp/a.jpg")
    only_img = NameFilter(["jpg"], glob="IMG_{1,2}*")
    assert only_img("x/IMG_1.jpg") and only_img("IMG_22.jpg") and not only_img("x/IMG_3.jpg")
