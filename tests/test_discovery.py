"""Discovery bookkeeping and event parsing: pure, no Spark, no Azure."""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import json
import re
from pathlib import Path

import pytest

from fruits.azure import BlobInfo
from fruits.config import load_config
from fruits.sources.discovery import DiscoveryState
from fruits.sources.events import parse_blob_events
from fruits.sources.names import NameFilter, content_type, extension_glob, has_extension

from .conftest import DATABRICKS_ENV

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
    assert state.seen_count() == 100
    state.add([blob("later.jpg", 1000)])
    state.commit(state.last_seq)
    # Keys older than high-water - 60 s are forgotten; blobs that old are ignored, not redone.
    assert state.seen_keys() == [("later.jpg", "e1")]
    assert state.add([blob("0.jpg", 0)]) == []
    assert state.ignored_too_old == 1
    assert state.pending() == []


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
    state = DiscoveryState.open(tmp_path / "state.sqlite", max_file_age_s=3600)
    state.add([blob("a.jpg"), blob("b.jpg", 1)])
    state.add_receipt(state.pending()[0], ["message-1", "receipt-0"])
    state.add_receipt(state.pending()[0], ["message-1", "receipt-1"])  # received again
    state.target = 2
    state.save()
    state.add([blob("unsaved.jpg", 2)])  # a crash before the next save: as if never seen
    pending, seen = state.pending()[:2], state.seen_keys()
    state.close()
    loaded = DiscoveryState.open(tmp_path / "state.sqlite", max_file_age_s=3600)
    assert loaded.pending() == pending and pending[0].receipts == [["message-1", "receipt-1"]]
    assert loaded.seen_keys() == [k for k in seen if k[0] != "unsaved.jpg"]
    assert (loaded.last_seq, loaded.high_water) == (2, (T0 + dt.timedelta(seconds=1)).timestamp())
    assert loaded.target is None  # each --once run sets its own


def test_a_json_state_of_an_earlier_version_is_converted_once(tmp_path: Path) -> None:
    """The state.json an earlier version kept (every key of the window, rewritten whole)."""
    legacy = {
        "max_file_age_s": 3600,
        "last_seq": 3,
        "committed": 1,
        "high_water": (T0 + dt.timedelta(seconds=2)).timestamp(),
        "seen": {
            f"{n}\ne1": (T0 + dt.timedelta(seconds=i)).timestamp() for i, n in enumerate("abc")
        },
        "pending": [
            {"seq": 2, "name": "b", "etag": "e1", "size": 10, "modified": 1.0, "receipts": []},
            {
                "seq": 3,
                "name": "c",
                "etag": "e1",
                "size": 10,
                "modified": 2.0,
                "receipts": [["m", "r"]],
            },
        ],
        "target": None,
        "last_listing": 123.0,
        "ignored_too_old": 4,
    }
    (tmp_path / "state.json").write_text(json.dumps(legacy))
    state = DiscoveryState.open(tmp_path / "state.sqlite", max_file_age_s=3600)
    assert not (tmp_path / "state.json").exists()
    assert state.seen_keys() == [("a", "e1"), ("b", "e1"), ("c", "e1")]
    assert [(a.seq, a.receipts) for a in state.pending()] == [(2, []), (3, [["m", "r"]])]
    assert (state.last_seq, state.committed, state.last_listing, state.ignored_too_old) == (
        3,
        1,
        123.0,
        4,
    )
    assert state.add([blob("a"), blob("d", 3)])[0].seq == 4  # a is known; d continues the seqs


def test_state_size_stays_bounded_as_keys_expire(tmp_path: Path) -> None:
    """A day of 24 hourly listings of 500 new photos a time, with a 3-hour window: the keys and
    the database's pages stop growing once the window is full."""
    state = DiscoveryState.open(tmp_path / "state.sqlite", max_file_age_s=3 * 3600)
    pages = []
    for hour in range(24):
        state.add([blob(f"h{hour:02d}-{i:04d}.jpg", hour * 3600 + i) for i in range(500)])
        state.commit(state.last_seq)
        state.save()
        assert state.seen_count() <= 4 * 500
        pages.append(state.used_bytes())
    # Exactly the window: 3 hours back from the newest photo (hour 23, second 499).
    assert state.seen_count() == 3 * 500 + 1
    assert max(pages[6:]) <= 1.1 * pages[5]  # freed pages are reused: flat after the window fills


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


PHONE_NAMES = ("IMG_0001.HEIC", "IMG_0002.heic", "IMG_0003.Heic", "a.HEIF", "b.avif", "c.AVIF")


@pytest.mark.parametrize("name", ["local", "azurite", "databricks"])
def test_every_config_discovers_phone_formats_in_any_case(name: str) -> None:
    extensions = load_config(name, environ=DATABRICKS_ENV).images.extensions
    assert {"heic", "heif", "avif", "jpg"} <= set(extensions)
    accept = NameFilter(extensions)
    alternatives = re.fullmatch(r"\*\.\{(.*)\}", extension_glob(extensions))
    assert alternatives, extension_glob(extensions)
    globs = [f"*.{alt}" for alt in alternatives.group(1).split(",")]
    for photo in (*PHONE_NAMES, "x.JPG", "x.Jpg", "x.jpeg", "x.PNG"):
        assert accept(f"landing/{photo}") and has_extension(photo, extensions), photo
        # Hadoop's glob (file source, Auto Loader): fnmatch reads [jJ] classes the same way.
        assert any(fnmatch.fnmatchcase(photo, g) for g in globs), photo
    for other in ("x.txt", "x.heics", "heic", "x.mov"):
        assert not accept(other) and not any(fnmatch.fnmatchcase(other, g) for g in globs)


def test_content_types_of_phone_formats() -> None:
    assert content_type("a/IMG_1.HEIC") == "image/heic"
    assert content_type("IMG_1.heif") == "image/heif"
    assert content_type("x.Avif") == "image/avif"
    assert content_type("x.JPG") == "image/jpeg" and content_type("x.webp") == "image/webp"
    assert content_type("notes.bin") == "application/octet-stream"
