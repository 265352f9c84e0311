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

Saved as one JSON file, written to a temporary name and renamed, so a crash leaves the old or
the new state, never half of one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fruits.azure import BlobInfo

__all__ = ["Arrival", "DiscoveryState"]


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

    @property
    def key(self) -> str:
        return _key(self.name, self.etag)


def _key(name: str, etag: str) -> str:
    return f"{name}\n{etag}"


@dataclass
class DiscoveryState:
    max_file_age_s: float
    last_seq: int = 0  # the highest sequence number handed out
    committed: int = 0  # arrivals up to here are in committed micro-batches
    high_water: float = 0.0  # the newest modification time seen
    seen: dict[str, float] = field(default_factory=dict)  # key -> modification time
    pending: list[Arrival] = field(default_factory=list)  # seq > committed, in seq order
    target: int | None = None  # Trigger.AvailableNow: never offer past this
    last_listing: float = 0.0  # epoch seconds of the last full listing (backfill)
    ignored_too_old: int = 0

    # -- discovery -------------------------------------------------------------------------

    def add(self, blobs: Iterable[BlobInfo], *, offer: bool = True) -> list[Arrival]:
        """Record blobs from a listing or from events; returns the new arrivals.

        With ``offer=False`` new blobs are remembered as seen but not offered (Auto Loader's
        ``includeExistingFiles=false`` on the first listing)."""
        new: list[Arrival] = []
        for blob in blobs:
            key = _key(blob.name, blob.etag)
            modified = blob.last_modified.timestamp()
            if key in self.seen:
                continue
            if modified < self.horizon:
                self.ignored_too_old += 1
                continue
            self.seen[key] = modified
            self.high_water = max(self.high_water, modified)
            if offer:
                self.last_seq += 1
                arrival = Arrival(self.last_seq, blob.name, blob.etag, blob.size, modified)
                self.pending.append(arrival)
                new.append(arrival)
        return new

    @property
    def horizon(self) -> float:
        """Blobs modified before this are older than the retention window."""
        return self.high_water - self.max_file_age_s if self.high_water else float("-inf")

    def arrival(self, name: str, etag: str) -> Arrival | None:
        key = _key(name, etag)
        return next((a for a in self.pending if a.key == key), None)

    def is_seen(self, name: str, etag: str) -> bool:
        return _key(name, etag) in self.seen

    # -- offsets ---------------------------------------------------------------------------

    def end_offset(self, start: int, *, max_files: int | None, max_bytes: int | None) -> int:
        """The end of the next micro-batch after ``start``: at most ``max_files`` arrivals and
        ``max_bytes`` (always at least one arrival, so a huge photo cannot stall the stream)."""
        end = start
        total = 0
        limit = self.last_seq if self.target is None else min(self.target, self.last_seq)
        for arrival in self.pending:
            if arrival.seq <= start:
                continue
            if arrival.seq > limit:
                break
            if max_files is not None and end - start >= max_files:
                break
            if max_bytes is not None and end > start and total + arrival.size > max_bytes:
                break
            total += arrival.size
            end = arrival.seq
        return end

    def between(self, start: int, end: int) -> list[Arrival]:
        return [a for a in self.pending if start < a.seq <= end]

    def commit(self, end: int) -> list[Arrival]:
        """The micro-batches up to ``end`` are committed: drop their arrivals (returned, so
        their queue messages can be deleted) and forget keys older than the window."""
        done = [a for a in self.pending if a.seq <= end]
        self.pending = [a for a in self.pending if a.seq > end]
        self.committed = max(self.committed, end)
        horizon = self.horizon
        self.seen = {k: m for k, m in self.seen.items() if m >= horizon}
        return done

    # -- persistence -----------------------------------------------------------------------

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(asdict(self)))
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path, *, max_file_age_s: float) -> DiscoveryState:
        if not path.exists():
            return cls(max_file_age_s=max_file_age_s)
        raw = json.loads(path.read_text())
        raw["max_file_age_s"] = max_file_age_s  # the config may have changed since
        raw["target"] = None  # set again by each Trigger.AvailableNow run, for that run only
        raw["pending"] = [Arrival(**a) for a in raw["pending"]]
        return cls(**raw)


def utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)
