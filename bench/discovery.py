"""``fruits bench discovery``: how the cost of finding new photos grows with the files already
in the landing container, in the two discovery modes (Auto Loader's names), by simulation.

* listing: every trigger lists the whole container and diffs it against the files seen
  (the discovery state keeps them): O(files in the landing);
* notification: a queue of Blob-created events; every trigger reads only the new files'
  events: O(new files), whatever the container holds.

Simulated on a local folder (listing = ``os.scandir`` + set difference against the seen set)
and an in-memory queue (notification), so the growth is measured here without Azure; a Blob
listing pays the same per file plus ~5,000 names per HTTP page on top.

The Blob source's own bookkeeping is timed for real: its
:class:`~fruits.sources.discovery.DiscoveryState` (SQLite) holding ``files`` keys, per trigger
the new blobs recorded and saved, then their batch committed and saved (``state_*`` figures):
in listing mode it is handed the whole listing, in notification mode only the new blobs.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._harness import machine
from fruits.azure import BlobInfo
from fruits.sources.discovery import DiscoveryState

__all__ = ["run_discovery"]

BLOB_LIST_PAGE = 5000  # names per List Blobs response (the service's maximum)


def run_discovery(*, sizes: list[int], new_files: int, triggers: int) -> dict[str, Any]:
    rows = []
    for size in sizes:
        rows.append(_one_size(size, new_files=new_files, triggers=triggers))
    return {
        "new_files_per_trigger": new_files,
        "triggers": triggers,
        "sizes": rows,
        **machine(),
    }


def _one_size(size: int, *, new_files: int, triggers: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="fruits-bench-discovery-"))
    try:
        for i in range(size):
            (folder / f"photo-{i:07d}.jpg").touch()
        seen = {entry.name for entry in os.scandir(folder)}
        queue: collections.deque[str] = collections.deque()
        listing_s = notification_s = 0.0
        for trigger in range(triggers):
            for j in range(new_files):
                name = f"new-{trigger:03d}-{j:05d}.jpg"
                (folder / name).touch()
                queue.append(name)  # the Blob-created event
            started = time.perf_counter()
            found = {e.name for e in os.scandir(folder)} - seen
            listing_s += time.perf_counter() - started
            seen |= found
            started = time.perf_counter()
            events = [queue.popleft() for _ in range(len(queue))]
            notification_s += time.perf_counter() - started
            assert len(found) == len(events) == new_files
        return {
            "files": size,
            "listing_ms_per_trigger": round(1000 * listing_s / triggers, 3),
            "notification_ms_per_trigger": round(1000 * notification_s / triggers, 4),
            "blob_list_pages_per_trigger": -(-(size + new_files) // BLOB_LIST_PAGE),
            **_state_costs(folder, size, new_files=new_files, triggers=triggers),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _state_costs(folder: Path, size: int, *, new_files: int, triggers: int) -> dict[str, Any]:
    """ms per trigger of the Blob source's discovery state holding ``size`` keys."""
    t0 = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)

    def blobs(first: int, last: int) -> list[BlobInfo]:
        return [
            BlobInfo(f"photos/p-{i:08d}.jpg", "0x8D", 5000, t0 + dt.timedelta(seconds=i / 1000))
            for i in range(first, last)
        ]

    figures: dict[str, Any] = {}
    for mode in ("listing", "notification"):
        path = folder / f"state-{mode}.sqlite"
        state = DiscoveryState.open(path, max_file_age_s=7 * 86400)
        state.add(blobs(0, size))
        state.commit(state.last_seq)
        state.save()
        elapsed = 0.0
        for trigger in range(triggers):
            first = size + trigger * new_files
            found = (
                blobs(0, first + new_files)
                if mode == "listing"
                else blobs(first, first + new_files)
            )
            started = time.perf_counter()
            assert len(state.add(found)) == new_files
            state.save()
            state.commit(state.last_seq)
            state.save()
            elapsed += time.perf_counter() - started
        figures[f"state_{mode}_ms_per_trigger"] = round(1000 * elapsed / triggers, 2)
        figures["state_bytes"] = state.used_bytes()
        state.close()
    return figures
