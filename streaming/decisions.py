"""A micro-batch's answers, decided once: written ahead into the checkpoint, reused on a replay.

A batch appends to two Delta tables, ``quarantine`` then ``predictions``: two transactions. If
the job dies between them, Spark replays the batch. Deciding again could decide differently: a
photo deleted in between can no longer be read, a model promoted in between answers otherwise, a
photo still uploading at the first try is whole at the second. The replay could then put a photo
in both tables, or in neither. So the step writes its decision here *before* the first Delta
commit, and a replay of the same (query id, batch id) appends exactly those rows; the Delta
transactions (``Txn``) skip whichever append had already committed.

One folder per batch under ``<checkpoint>/decisions/``, written under a temporary name and
renamed, so a crash leaves no decision or a whole one. Spark starts batch N+1 only after
committing batch N in its own log, so when batch N starts every older decision is no longer
needed and is deleted: the journal holds one or two batches, however long the stream runs.

Any path ``pyarrow.fs`` opens: a local folder, a Unity Catalog Volume (``/Volumes/...``), or a
URL (``abfss://``) with the environment's credentials.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc

__all__ = ["Decision", "DecisionJournal"]

_TABLES = ("predictions", "quarantine")


@dataclass(frozen=True)
class Decision:
    """A batch's rows exactly as they are appended to each table."""

    predictions: pa.Table
    quarantine: pa.Table
    model_version: int


class DecisionJournal:
    def __init__(self, folder: str) -> None:
        self.folder = folder.rstrip("/")
        self._fs, self._root = pafs.FileSystem.from_uri(self.folder)

    def _batch_dir(self, batch_id: int) -> str:
        return f"{self._root}/{batch_id:020d}"

    def write(self, query_id: str, batch_id: int, decision: Decision) -> None:
        """Record ``decision`` for (query id, batch id); whole or not at all."""
        self._fs.create_dir(self._root, recursive=True)
        temporary = f"{self._root}/.{batch_id:020d}-{uuid.uuid4().hex}"
        self._fs.create_dir(temporary)
        metadata = {"query_id": query_id, "model_version": str(decision.model_version)}
        for name in _TABLES:
            table: pa.Table = getattr(decision, name)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
            with (
                self._fs.open_output_stream(f"{temporary}/{name}.arrow") as out,
                ipc.new_file(out, table.schema) as writer,
            ):
                writer.write_table(table)
        final = self._batch_dir(batch_id)
        if self._fs.get_file_info(final).type != pafs.FileType.NotFound:
            self._fs.delete_dir(final)  # another query's leftover (checked on recall)
        self._fs.move(temporary, final)

    def recall(self, query_id: str, batch_id: int) -> Decision | None:
        """The decision written for this (query id, batch id), or None (first attempt)."""
        folder = self._batch_dir(batch_id)
        if self._fs.get_file_info(folder).type != pafs.FileType.Directory:
            return None
        tables: dict[str, pa.Table] = {}
        for name in _TABLES:
            with self._fs.open_input_file(f"{folder}/{name}.arrow") as source:
                tables[name] = ipc.open_file(source).read_all()
        metadata = tables["predictions"].schema.metadata or {}
        if metadata.get(b"query_id", b"").decode() != query_id:
            return None  # written by another query on a re-used checkpoint folder
        return Decision(
            predictions=tables["predictions"].replace_schema_metadata(None),
            quarantine=tables["quarantine"].replace_schema_metadata(None),
            model_version=int(metadata[b"model_version"]),
        )

    def forget_before(self, batch_id: int) -> None:
        """Delete the decisions of batches before ``batch_id`` (and abandoned temporaries):
        Spark committed them before it started this one."""
        selector = pafs.FileSelector(self._root, allow_not_found=True)
        for info in self._fs.get_file_info(selector):
            name = info.base_name
            stale = name.startswith(".") or (name.isdigit() and int(name) < batch_id)
            if stale and info.type == pafs.FileType.Directory:
                self._fs.delete_dir(info.path)

    def batches(self) -> list[int]:
        """The batch ids with a decision on record (tests, status)."""
        selector = pafs.FileSelector(self._root, allow_not_found=True)
        return sorted(
            int(i.base_name) for i in self._fs.get_file_info(selector) if i.base_name.isdigit()
        )
