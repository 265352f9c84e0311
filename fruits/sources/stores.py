"""Where uploads land, as one interface: a local (or mounted) folder, or a Blob container.

The stream's source (:mod:`fruits.sources.uploads`) lists a landing, reads what it found and
cleans up what is committed through a :class:`LandingStore`, so that every option means the same
on every landing:

* a file is known by its name relative to the landing and a version tag (``etag``): a Blob's
  ETag, a file's inode, size and modification time in nanoseconds. A re-upload under the same
  name is a new version, so a new arrival, on a folder as on Blob;
* names are data, never parsed as a path or URI (a file named ``at 12:30.jpg`` or ``%41.jpg`` is
  read as it is: Hadoop's ``Path`` would take ``at 12`` for a URI scheme);
* a read is bounded: at most ``limit`` bytes, and only the version that was listed;
* archiving never overwrites an archived file: a second upload of a name archived before is
  kept beside it (:func:`archive_name`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from fruits.azure import AzureStorage, BlobInfo, BlobLocation
from fruits.config import AzureConfig

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

__all__ = [
    "BlobStore",
    "FolderStore",
    "LandingStore",
    "ReadFailed",
    "archive_name",
    "landing_store",
]


class ReadFailed(Exception):
    """A listed file could not be read for a reason other than its absence (permissions, an I/O
    error): the stream quarantines it with this message instead of failing the batch."""


class LandingStore(Protocol):
    """What the stream source needs of a landing: Picklable (settings only), so Spark tasks
    read through their own copy."""

    @property
    def prefix(self) -> str:
        """What every name of this store starts with (a Blob landing's prefix; ``""``)."""
        ...

    def list(self, accept: Callable[[str], bool]) -> Iterator[BlobInfo]:
        """Every accepted file, recursively, by its name in the store (relative to a folder's
        root; a blob's full name in its container)."""
        ...

    def info(self, name: str) -> BlobInfo | None:
        """The file's current version, or None when it does not exist."""
        ...

    def read(self, name: str, etag: str | None, limit: int) -> bytes | None:
        """At most ``limit`` bytes of the file, or None when it is gone or (``etag`` given) no
        longer that version; raises :class:`ReadFailed` for any other failure."""
        ...

    def url(self, name: str) -> str:
        """The file's ``path`` in the tables."""
        ...

    def clean(self, name: str, etag: str, archive: str | None) -> None:
        """Move the file (that version only) under ``archive``, or delete it when ``archive`` is
        None; a file already gone, or rewritten since, is left alone."""
        ...


def landing_store(location: str, azure: AzureConfig | None = None) -> LandingStore:
    """The store of a landing: ``az://`` and ``abfs[s]://`` are Blob containers (through the
    Blob SDK), anything else a folder (``file:`` URLs included)."""
    if location.startswith(("az://", "abfs://", "abfss://", "wasb://", "wasbs://")):
        return BlobStore(location, azure or AzureConfig())
    return FolderStore(location.removeprefix("file://").removeprefix("file:"))


def archive_name(name: str, etag: str, taken: Callable[[str], bool]) -> str:
    """``name``, or when an archived file already has it, ``name`` with the version before the
    extension (``a.jpg`` -> ``a.<etag>.jpg``): an archive keeps every upload."""
    if not taken(name):
        return name
    stem, dot, extension = name.rpartition(".")
    tag = "".join(c for c in etag if c.isalnum())[-16:]
    return f"{stem}.{tag}.{extension}" if dot and "/" not in extension else f"{name}.{tag}"


class FolderStore:
    """A landing folder on this machine or mounted on every executor (a cluster's shared disk,
    a Databricks Volume under ``/Volumes``)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    @property
    def prefix(self) -> str:
        return ""

    def _path(self, name: str) -> str:
        return os.path.join(self.root, *name.split("/"))

    def list(self, accept: Callable[[str], bool]) -> Iterator[BlobInfo]:
        # os.scandir, not a glob: no name is a pattern, and symbolic links are not followed (a
        # link named x.jpg to another file of the machine is not an upload of it).
        pending = [""]
        while pending:
            relative = pending.pop()
            try:
                entries = list(os.scandir(self._path(relative) if relative else self.root))
            except FileNotFoundError:
                continue
            for entry in sorted(entries, key=lambda e: e.name):
                name = f"{relative}{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    if not entry.name.startswith((".", "_")):  # hidden: uploads in progress
                        pending.append(f"{name}/")
                elif entry.is_file(follow_symlinks=False) and accept(name):
                    with contextlib.suppress(FileNotFoundError):
                        yield _file_info(name, entry.stat(follow_symlinks=False))

    def info(self, name: str) -> BlobInfo | None:
        try:
            return _file_info(name, os.stat(self._path(name), follow_symlinks=False))
        except FileNotFoundError:
            return None

    def read(self, name: str, etag: str | None, limit: int) -> bytes | None:
        try:
            with open(self._path(name), "rb", buffering=0) as handle:
                if etag is not None and _etag(os.fstat(handle.fileno())) != etag:
                    return None  # rewritten since it was listed: a new arrival of its own
                return _read_up_to(handle, limit)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ReadFailed(f"{type(exc).__name__}: {exc.strerror or exc}") from exc

    def url(self, name: str) -> str:
        # As Spark's binaryFile spells a local file (Hadoop's Path.toString): file:/a/b c.jpg
        return f"file:{self._path(name)}"

    def clean(self, name: str, etag: str, archive: str | None) -> None:
        current = self.info(name)
        if current is None or current.etag != etag:
            return
        if archive is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(name))
            return
        target_root = os.path.abspath(archive.removeprefix("file://").removeprefix("file:"))
        target_name = archive_name(
            name, etag, lambda n: os.path.lexists(os.path.join(target_root, *n.split("/")))
        )
        target = os.path.join(target_root, *target_name.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.rename(self._path(name), target)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.move(self._path(name), target)  # another file system: copy, then delete


def _etag(stat: os.stat_result) -> str:
    return f"{stat.st_ino:x}-{stat.st_size:x}-{stat.st_mtime_ns:x}"


def _file_info(name: str, stat: os.stat_result) -> BlobInfo:
    # When it landed: a copy that keeps its original time (cp -p, rsync -a, an unzipped
    # archive) has an old mtime, but its ctime is set when it is written or renamed into the
    # landing. The later of the two, as Blob's server-set Last-Modified: an old photo is not
    # taken for one past stream.max_file_age, and its latency counts from its arrival.
    modified = dt.datetime.fromtimestamp(max(stat.st_mtime_ns, stat.st_ctime_ns) / 1e9, dt.UTC)
    return BlobInfo(name=name, etag=_etag(stat), size=stat.st_size, last_modified=modified)


def _read_up_to(handle: object, limit: int) -> bytes:
    chunks = []
    left = limit
    while left > 0:
        chunk = handle.read(min(left, 1 << 20))  # type: ignore[attr-defined]
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class BlobStore:
    """A landing prefix in a Blob container (``az://`` or the same place as ``abfs[s]://``)."""

    def __init__(self, location: str, azure: AzureConfig) -> None:
        self.location = BlobLocation.parse(location)
        self.azure = azure
        # A file's path in the tables keeps the landing's spelling (az://c/..., abfss://c@host/...)
        scheme, _, rest = location.partition("://")
        self._base = f"{scheme}://{rest.split('/', 1)[0]}/"
        self._storage: AzureStorage | None = None

    def __getstate__(self) -> dict[str, object]:
        # settings only, no clients
        return {"location": self.location, "azure": self.azure, "_base": self._base}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._storage = None

    @property
    def storage(self) -> AzureStorage:
        if self._storage is None:
            self._storage = AzureStorage(self.azure)
        return self._storage

    def _container(self) -> ContainerClient:
        return self.storage.container(self.location.container)

    @property
    def prefix(self) -> str:
        return self.location.prefix

    def list(self, accept: Callable[[str], bool]) -> Iterator[BlobInfo]:
        return self.storage.list_blobs(self.location, accept)

    def info(self, name: str) -> BlobInfo | None:
        return self.storage.blob_info(self.location.container, name)

    def read(self, name: str, etag: str | None, limit: int) -> bytes | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import (
            HttpResponseError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )

        container = self._container()
        try:
            if etag is None:  # whatever is there now (a batch read of named files)
                download = container.download_blob(name, offset=0, length=limit)
            else:  # exactly the version discovered, not a rewrite after it
                download = container.download_blob(
                    name,
                    offset=0,
                    length=limit,
                    etag=f'"{etag}"',
                    match_condition=MatchConditions.IfNotModified,
                )
            return bytes(download.readall())
        except (ResourceNotFoundError, ResourceModifiedError):
            return None
        except HttpResponseError as exc:
            if exc.status_code == 416:  # a range on an empty blob: it has no bytes
                return b""
            raise

    def url(self, name: str) -> str:
        return f"{self._base}{name}"

    def clean(self, name: str, etag: str, archive: str | None) -> None:
        """Archive by a server-side copy (no byte comes through this process), then delete;
        both only as the version that was read."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        source = self._container().get_blob_client(name)
        relative = name.removeprefix(self.location.prefix)
        if archive is not None:
            where = BlobLocation.parse(archive)
            target_container = self.storage.container(where.container)

            def taken(candidate: str) -> bool:
                return target_container.get_blob_client(where.child(candidate)).exists()

            target = target_container.get_blob_client(
                where.child(archive_name(relative, etag, taken))
            )
            try:
                # Same account: the copy is authorised by the request's own credentials, and
                # the source conditions make it copy exactly the version that was read.
                target.start_copy_from_url(
                    source.url,
                    source_etag=f'"{etag}"',
                    source_match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceNotFoundError, ResourceModifiedError):
                return  # gone, or rewritten since: that version is not ours to clean
            _wait_for_copy(target)
        with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):
            source.delete_blob(etag=f'"{etag}"', match_condition=MatchConditions.IfNotModified)


_COPY_TIMEOUT_S = 300.0


def _wait_for_copy(target: object) -> None:
    """A copy within an account is usually done when it is accepted; a large one may take a
    while. Until it succeeds the source is kept, and a failure fails the trigger (the clean-up
    stays due for the next one)."""
    import time

    deadline = time.monotonic() + _COPY_TIMEOUT_S
    while True:
        copy = target.get_blob_properties().copy  # type: ignore[attr-defined]
        if copy.status in (None, "success"):
            return
        if copy.status != "pending" or time.monotonic() > deadline:
            raise OSError(f"archive copy {copy.status}: {copy.status_description or ''}")
        time.sleep(0.5)
