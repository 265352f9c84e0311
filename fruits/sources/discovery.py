"""Auto Loader-style discovery state: which blobs were offered to the stream, in what order.

Pure bookkeeping (no Spark, no Azure), kept by the Blob stream source in its checkpoint:

* every new blob gets the next sequence number; a stream offset is a sequence number, so a
  micro-batch is "arrivals ``start < seq <= end``" and a replay reads exactly the same blobs;
* a blob is identified by ``(name, etag)``: found again by a later listing, or by a duplicate
  event, it is not offered twice; rewritten (new etag), it is a new arrival;
* arrivals are never found by time: a blob that shows up late, in the same second as another,
  or with an older modification time than blobs already seen is still new;
* the state stays bounded: a key is forgotten once its modification time is older than the
  high-water mark minus ``max_file_age``, and blobs older than that are ignored (Auto Loader's
  ``maxFileAge``). State size = number of blobs modified within that window.

Kept in SQLite (``discovery/state.sqlite`` in the checkpoint), so the work of a trigger grows
with what is new, not with the window (84 million keys at 12 million photos a day): seen keys
are a primary-key index, looked up in one statement per listing; expiry is a ``DELETE`` on an
indexed modification time; pending arrivals are a table keyed by their sequence number. Changes
accumulate in one transaction that :meth:`DiscoveryState.save` commits, so a crash leaves the
state as of the last save, never half of one (a ``state.json`` that an older checkpoint holds
is converted once, on first open).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fruits.azure import BlobInfo

__all__ = ["Arrival", "DiscoveryState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    name TEXT NOT NULL, etag TEXT NOT NULL, modified REAL NOT NULL, PRIMARY KEY (name, etag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_by_modified ON seen (modified);
CREATE TABLE IF NOT EXISTS arrivals (
    seq INTEGER PRIMARY KEY, name TEXT NOT NULL, etag TEXT NOT NULL, size INTEGER NOT NULL,
    modified REAL NOT NULL, receipts TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS arrivals_by_key ON arrivals (name, etag);
CREATE TABLE IF NOT EXISTS cleanup (
    name TEXT NOT NULL, etag TEXT NOT NULL, due REAL NOT NULL, PRIMARY KEY (name, etag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cleanup_by_due ON cleanup (due);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS listing (
    ord INTEGER PRIMARY KEY, name TEXT, etag TEXT, size INTEGER, modified REAL
);
"""
# Counters kept in ``meta`` (written by save()); ``target`` is per --once run, never kept.
_COUNTERS = ("last_seq", "committed", "high_water", "last_listing", "ignored_too_old")


@dataclass
class Arrival:
    """A blob offered to the stream. ``receipts`` are the queue messages that announced it,
    deleted once the batch holding it is committed (notification mode)."""

    seq: int
    name: str
    etag: str
    size: int
    modified: float  # epoch seconds
    receipts: list[list[str]] = field(default_factory=list)  # [message id, pop receipt]


class DiscoveryState:
    """The state in a SQLite file (``path``), or in memory (``path=None``: tests, benches)."""

    def __init__(self, max_file_age_s: float, path: Path | None = None) -> None:
        self.max_file_age_s = max_file_age_s
        self.path = path
        self.last_seq = 0  # the highest sequence number handed out
        self.committed = 0  # arrivals up to here are in committed micro-batches
        self.high_water = 0.0  # the newest modification time seen
        self.last_listing = 0.0  # epoch seconds of the last full listing (backfill)
        self.ignored_too_old = 0
        self.target: int | None = None  # Trigger.AvailableNow: never offer past this
        self._changed = False
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are begun explicitly (_begin) and ended by save().
        self._db = sqlite3.connect(":memory:" if path is None else path, isolation_level=None)
        if path is not None:
            # WAL: a commit appends to the log (one fsync, FULL: an OS crash keeps it too);
            # the log is truncated back to 4 MB after each checkpoint.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA journal_size_limit=4194304")
        self._db.execute("PRAGMA temp_store=MEMORY")
        self._db.executescript(_SCHEMA)
        for key, value in self._db.execute("SELECT key, value FROM meta"):
            setattr(self, key, value if key in ("high_water", "last_listing") else int(value))

    @classmethod
    def open(cls, path: Path, *, max_file_age_s: float) -> DiscoveryState:
        """The state at ``path``; a JSON state of an earlier version beside it (``state.json``)
        is converted first: built under a temporary name and renamed, then the JSON removed, so
        a crash at any point leaves one whole state."""
        legacy = path.with_name("state.json")
        if legacy.exists() and not path.exists():
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.unlink(missing_ok=True)
            converted = cls(max_file_age_s, temporary)
            converted._load_json(json.loads(legacy.read_text()))
            converted.save()
            converted.close()
            os.replace(temporary, path)
        if legacy.exists():
            legacy.unlink()  # converted (now or by a run that crashed before removing it)
        return cls(max_file_age_s, path)

    def _load_json(self, raw: dict[str, object]) -> None:
        self._begin()
        seen = raw["seen"]
        assert isinstance(seen, dict)
        self._db.executemany(
            "INSERT INTO seen VALUES (?, ?, ?)",
            ((*key.split("\n", 1), modified) for key, modified in seen.items()),
        )
        pending = raw["pending"]
        assert isinstance(pending, list)
        self._db.executemany(
            "INSERT INTO arrivals VALUES (?, ?, ?, ?, ?, ?)",
            (
                (
                    a["seq"],
                    a["name"],
                    a["etag"],
                    a["size"],
                    a["modified"],
                    json.dumps(a["receipts"]),
                )
                for a in pending
            ),
        )
        for key in _COUNTERS:
            setattr(self, key, raw[key])

    # -- discovery -------------------------------------------------------------------------

    def add(self, blobs: Iterable[BlobInfo], *, offer: bool = True) -> list[Arrival]:
        """Record blobs from a listing or from events; returns the new arrivals.

        With ``offer=False`` new blobs are remembered as seen but not offered (Auto Loader's
        ``includeExistingFiles=false`` on the first listing)."""
        # The listing goes into a temporary table and is diffed against the seen keys in one
        # statement (index lookups in SQLite, not Python); only the unseen come back. In one
        # transaction (row by row, the inserts cost twice as much), ended here when nothing
        # new was recorded, else by save().
        opened = not self._db.in_transaction
        if opened:
            self._db.execute("BEGIN")
        self._db.execute("DELETE FROM listing")
        self._db.executemany(
            "INSERT INTO listing (name, etag, size, modified) VALUES (?, ?, ?, ?)",
            ((b.name, b.etag, b.size, b.last_modified.timestamp()) for b in blobs),
        )
        unseen = self._db.execute(
            "SELECT name, etag, size, modified FROM listing AS l WHERE NOT EXISTS "
            "(SELECT 1 FROM seen AS s WHERE s.name = l.name AND s.etag = l.etag) ORDER BY ord"
        ).fetchall()
        self._db.execute("DELETE FROM listing")
        new: list[Arrival] = []
        taken: set[tuple[str, str]] = set()
        for name, etag, size, modified in unseen:
            if (name, etag) in taken:  # twice in one listing, or a duplicate event
                continue
            if modified < self.horizon:
                self.ignored_too_old += 1
                continue
            taken.add((name, etag))
            self._begin()
            self._db.execute("INSERT INTO seen VALUES (?, ?, ?)", (name, etag, modified))
            self.high_water = max(self.high_water, modified)
            if offer:
                self.last_seq += 1
                arrival = Arrival(self.last_seq, name, etag, size, modified)
                self._db.execute(
                    "INSERT INTO arrivals VALUES (?, ?, ?, ?, ?, '[]')",
                    (arrival.seq, name, etag, size, modified),
                )
                new.append(arrival)
        if opened and not self._changed:
            self._db.execute("COMMIT")
        return new

    @property
    def horizon(self) -> float:
        """Blobs modified before this are older than the retention window."""
        return self.high_water - self.max_file_age_s if self.high_water else float("-inf")

    def arrival(self, name: str, etag: str) -> Arrival | None:
        """The pending (offered, not committed) arrival of this blob version, if any."""
        rows = self._arrivals("WHERE name = ? AND etag = ?", (name, etag))
        return rows[0] if rows else None

    def is_seen(self, name: str, etag: str) -> bool:
        query = "SELECT 1 FROM seen WHERE name = ? AND etag = ?"
        return self._db.execute(query, (name, etag)).fetchone() is not None

    def add_receipt(self, arrival: Arrival, receipt: list[str]) -> None:
        """A queue message announcing ``arrival``: its latest pop receipt replaces any earlier
        one of the same message."""
        (text,) = self._db.execute(
            "SELECT receipts FROM arrivals WHERE seq = ?", (arrival.seq,)
        ).fetchone()
        receipts = [r for r in json.loads(text) if r[0] != receipt[0]] + [receipt]
        self._begin()
        self._db.execute(
            "UPDATE arrivals SET receipts = ? WHERE seq = ?", (json.dumps(receipts), arrival.seq)
        )
        arrival.receipts = receipts

    # -- offsets ---------------------------------------------------------------------------

    def end_offset(self, start: int, *, max_files: int | None, max_bytes: int | None) -> int:
        """The end of the next micro-batch after ``start``: at most ``max_files`` arrivals and
        ``max_bytes`` (always at least one arrival, so a huge photo cannot stall the stream)."""
        limit = self.last_seq if self.target is None else min(self.target, self.last_seq)
        rows = self._db.execute(
            "SELECT seq, size FROM arrivals WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (start, limit, -1 if max_files is None else max_files),
        )
        end = start
        total = 0
        for seq, size in rows:
            if max_bytes is not None and end > start and total + size > max_bytes:
                break
            total += size
            end = seq
        return int(end)

    def between(self, start: int, end: int) -> list[Arrival]:
        return self._arrivals("WHERE seq > ? AND seq <= ?", (start, end))

    def commit(self, end: int) -> list[Arrival]:
        """The micro-batches up to ``end`` are committed: drop their arrivals (returned, so
        their queue messages can be deleted) and forget keys older than the window."""
        done = self._arrivals("WHERE seq <= ?", (end,))
        self._begin()
        self._db.execute("DELETE FROM arrivals WHERE seq <= ?", (end,))
        self.committed = max(self.committed, end)
        self._db.execute("DELETE FROM seen WHERE modified < ?", (self.horizon,))
        return done

    def _arrivals(self, where: str, parameters: tuple[object, ...]) -> list[Arrival]:
        rows = self._db.execute(
            f"SELECT seq, name, etag, size, modified, receipts FROM arrivals {where} ORDER BY seq",
            parameters,
        )
        return [Arrival(s, n, e, z, m, json.loads(r)) for s, n, e, z, m, r in rows]

    # -- landing clean-up (stream.clean_source) ---------------------------------------------

    def schedule_cleanup(self, arrivals: list[Arrival], *, due: float) -> None:
        """Committed arrivals whose blobs are to be archived or deleted at ``due`` (epoch s);
        saved with the commit that made them due, so a crash cannot forget one."""
        if not arrivals:
            return
        self._begin()
        self._db.executemany(
            "INSERT OR IGNORE INTO cleanup VALUES (?, ?, ?)",
            ((a.name, a.etag, due) for a in arrivals),
        )

    def cleanup_due(self, now: float, *, limit: int = 1000) -> list[tuple[str, str]]:
        query = "SELECT name, etag FROM cleanup WHERE due <= ? ORDER BY due LIMIT ?"
        return [(n, e) for n, e in self._db.execute(query, (now, limit))]

    def cleaned(self, blobs: list[tuple[str, str]]) -> None:
        self._begin()
        self._db.executemany("DELETE FROM cleanup WHERE name = ? AND etag = ?", blobs)

    # -- size ------------------------------------------------------------------------------

    def seen_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM seen").fetchone()[0])

    def seen_keys(self) -> list[tuple[str, str]]:
        return [(n, e) for n, e in self._db.execute("SELECT name, etag FROM seen ORDER BY 1, 2")]

    def pending(self) -> list[Arrival]:
        return self._arrivals("WHERE seq > ?", (self.committed,))

    def used_bytes(self) -> int:
        """Bytes of the database's pages in use (SQLite reuses freed pages, so the file stops
        growing once the window is full)."""
        count = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        page = self._db.execute("PRAGMA page_size").fetchone()[0]
        return int((count - free) * page)

    # -- persistence -----------------------------------------------------------------------

    @property
    def changed(self) -> bool:
        """Keys or arrivals changed since the last :meth:`save`."""
        return self._changed

    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
        self._changed = True

    def save(self) -> None:
        """Commit every change since the last save, with the counters, in one transaction."""
        self._begin()
        self._db.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            ((key, getattr(self, key)) for key in _COUNTERS),
        )
        self._db.execute("COMMIT")
        self._changed = False

    def close(self) -> None:
        """Drop what was not saved (as a crash would) and release the file."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._db.close()


def utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)
