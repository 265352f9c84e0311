"""The landing stores (a folder, Blob on Azurite) and the options every source shares: names are
data, reads are bounded and versioned, a re-upload is a new version, archives never overwrite,
``path_glob`` narrows the extension rule alike everywhere, and Event Grid's ``CreateFile`` of a
hierarchical-namespace account is not an upload."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from fruits.azure import AzureStorage, BlobLocation
from fruits.config import AzureConfig, load_config
from fruits.sources.autoloader import autoloader_options
from fruits.sources.events import blob_created_message, parse_blob_events
from fruits.sources.names import NameFilter, extension_regex
from fruits.sources.stores import BlobStore, FolderStore, ReadFailed, archive_name

from .conftest import DATABRICKS_ENV, PROJECT

EXTENSIONS = ("jpg", "heic")


def _names(store: Any, glob: str | None = None) -> list[str]:
    accept = NameFilter(EXTENSIONS, glob, under=store.prefix)
    return sorted(info.name.removeprefix(store.prefix) for info in store.list(accept))


def test_a_folder_lists_every_name_as_it_is_and_no_hidden_file_or_link(tmp_path: Path) -> None:
    for name in ("at 12:30.jpg", "10:00/b.JPG", "%41.jpg", "x.heic", ".hidden.jpg", "_t.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".uploading").mkdir()
    (tmp_path / ".uploading" / "c.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_bytes(b"x")
    os.symlink("/etc/hostname", tmp_path / "link.jpg")  # not an upload of that file
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it would block a task forever
    store = FolderStore(str(tmp_path))
    assert _names(store) == ["%41.jpg", "10:00/b.JPG", "at 12:30.jpg", "x.heic"]
    assert store.url("at 12:30.jpg") == f"file:{tmp_path}/at 12:30.jpg"


def test_a_folder_read_is_bounded_and_of_the_listed_version(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"0123456789")
    store = FolderStore(str(tmp_path))
    (listed,) = store.list(NameFilter(EXTENSIONS))
    assert store.read("a.jpg", listed.etag, 4) == b"0123"
    assert store.read("a.jpg", None, 100) == b"0123456789"
    (tmp_path / "a.jpg").write_bytes(b"another upload")  # the same name, new content
    (again,) = store.list(NameFilter(EXTENSIONS))
    assert again.etag != listed.etag  # a new version: a new arrival for the discovery
    assert store.read("a.jpg", listed.etag, 100) is None  # not the version that was listed
    assert store.read("gone.jpg", None, 100) is None
    (tmp_path / "dir.jpg").mkdir()  # a name that is not a readable file: an error of its own
    with pytest.raises(ReadFailed, match="IsADirectoryError"):
        store.read("dir.jpg", None, 100)


def test_a_folder_archive_keeps_every_upload_of_a_name(tmp_path: Path) -> None:
    landing, archive = tmp_path / "landing", tmp_path / "archive"
    (landing / "sub").mkdir(parents=True)
    store = FolderStore(str(landing))
    versions = []
    for content in (b"first", b"second"):
        (landing / "sub" / "a.jpg").write_bytes(content)
        info = store.info("sub/a.jpg")
        assert info is not None
        versions.append(info.etag)
        store.clean("sub/a.jpg", info.etag, str(archive))
    kept = {p.name: p.read_bytes() for p in (archive / "sub").iterdir()}
    assert kept["a.jpg"] == b"first" and sorted(kept.values()) == [b"first", b"second"]
    # Only the version that was read is cleaned: a rewrite since then stays.
    (landing / "b.jpg").write_bytes(b"read")
    read = store.info("b.jpg")
    (landing / "b.jpg").write_bytes(b"rewritten after the read")
    assert read is not None
    store.clean("b.jpg", read.etag, None)
    assert (landing / "b.jpg").read_bytes() == b"rewritten after the read"
    assert archive_name("a.jpg", "0x8D..1F", lambda n: n == "a.jpg") == "a.0x8D1F.jpg"


def test_blob_reads_are_bounded_versioned_and_archives_are_server_side_copies(
    azurite: Any,
) -> None:
    import uuid

    azure = AzureConfig(use_emulator=True)
    container = f"store-{uuid.uuid4().hex[:10]}"
    storage = AzureStorage(azure)
    client = storage.container(container, create=True)
    storage.container(f"{container}-archive", create=True)
    client.upload_blob("photos/at 12:30.jpg", b"0123456789", metadata={"who": "app"})
    client.upload_blob("photos/empty.jpg", b"")
    store = BlobStore(f"az://{container}/photos", azure)
    assert _names(store) == ["at 12:30.jpg", "empty.jpg"]
    info = store.info("photos/at 12:30.jpg")
    assert info is not None
    assert store.read(info.name, info.etag, 4) == b"0123"
    assert store.read("photos/empty.jpg", None, 100) == b""
    assert store.url(info.name) == f"az://{container}/photos/at 12:30.jpg"
    abfs = BlobStore(f"abfs://{container}@devstoreaccount1.dfs.core.windows.net/photos", azure)
    assert abfs.url(info.name).startswith(f"abfs://{container}@devstoreaccount1.dfs.")

    archive = f"az://{container}-archive/kept"
    store.clean(info.name, info.etag, archive)
    client.upload_blob("photos/at 12:30.jpg", b"second upload")
    second = store.info("photos/at 12:30.jpg")
    assert second is not None and second.etag != info.etag
    assert store.read(info.name, info.etag, 100) is None  # the first version is gone
    store.clean(second.name, second.etag, archive)
    archived = storage.container(f"{container}-archive")
    names = sorted(b.name for b in archived.list_blobs())
    assert len(names) == 2 and "kept/at 12:30.jpg" in names
    first = archived.download_blob("kept/at 12:30.jpg")
    assert first.readall() == b"0123456789" and first.properties.metadata == {"who": "app"}
    (other,) = [n for n in names if n != "kept/at 12:30.jpg"]
    assert archived.download_blob(other).readall() == b"second upload"
    assert _names(store) == ["empty.jpg"]


def test_path_glob_narrows_the_extension_rule_on_every_source() -> None:
    accept = NameFilter(EXTENSIONS, "IMG_*")
    assert accept("IMG_1.jpg") and accept("d/IMG_2.HEIC")
    assert not accept("IMG_1.txt")  # the glob narrows the extensions, never widens them
    assert not accept("other.jpg")
    environ = {"FRUITS_ROOT": "/r", **DATABRICKS_ENV, "FRUITS__STREAM__PATH_GLOB": "IMG_*"}
    config = load_config(PROJECT / "conf" / "databricks.yaml", environ=environ)
    options = autoloader_options(config, "/ck")
    assert options["pathGlobFilter"] == "IMG_*"  # and the extension rule on its rows:
    import re

    regex = extension_regex(EXTENSIONS).replace("(?i)", "")
    assert re.search(regex, "x/IMG_1.JPG", re.I) and not re.search(regex, "IMG_1.txt", re.I)
    assert options["cloudFiles.allowOverwrites"] == "true"  # a re-upload is a new arrival


def test_an_hns_create_file_event_is_not_an_upload() -> None:
    message = blob_created_message("acct", "landing", "photos/a.jpg", "0x1", 0)
    event = json.loads(base64.b64decode(message))
    event["data"]["api"] = "CreateFile"
    assert parse_blob_events(json.dumps(event)) == []
    event["data"]["api"] = "FlushWithClose"
    (created,) = parse_blob_events(json.dumps(event)) or []
    assert created.name == "photos/a.jpg"
    location = BlobLocation.parse("az://landing/photos")
    assert created.container == location.container


def test_a_photo_copied_with_its_old_time_is_dated_by_its_arrival(tmp_path: Path) -> None:
    """``cp -p`` keeps a photo's mtime of years ago; the discovery would take it for older than
    ``stream.max_file_age`` and never offer it."""
    import time

    (tmp_path / "old.jpg").write_bytes(b"x")
    os.utime(tmp_path / "old.jpg", (0, 0))  # 1970, as an archive's time could be
    (info,) = FolderStore(str(tmp_path)).list(NameFilter(EXTENSIONS))
    assert abs(info.last_modified.timestamp() - time.time()) < 60
