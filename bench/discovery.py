"""``fruits bench discovery``: how the cost of finding new photos grows with the files already
in the landing container, in the two discovery modes (Auto Loader's names), by simulation.

* listing: every trigger lists the whole container and diffs it against the files seen
  (Spark's file source keeps them in its checkpoint log): O(files in the container);
* notification: a queue of Blob-created events; every trigger reads only the new files'
  events: O(new files), whatever the container holds.

Simulated on a local folder (listing = ``os.scandir`` + set difference against the seen set)
and an in-memory queue (notification), so the growth is measured here without Azure; a Blob
listing pays the same per file plus ~5,000 names per HTTP page on top.
"""

from __future__ import annotations

import collections
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._harness import machine

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
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
