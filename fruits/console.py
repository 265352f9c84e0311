"""What the jobs tell a person: progress and stage timings on stderr.

Stdout is kept for results (the CLI's last stdout line is one JSON object), so scripts can
read it while a person watches stderr.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Stages", "log", "progress_printer"]


def log(message: str) -> None:
    print(f"[fruits {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Stages:
    """Times named stages: ``with stages("features"): ...``; ``stages.seconds`` holds them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log(f"{name} ...")
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[name] = round(self.seconds.get(name, 0.0) + elapsed, 2)
            log(f"{name} done in {elapsed:.1f} s")


def progress_printer(what: str) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback printing counts, rate and time left."""
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if total == 0:
            log(f"{what}: nothing to do")
            return
        elapsed = time.perf_counter() - started
        rate = done / elapsed if elapsed > 0 and done else 0.0
        left = f", ~{(total - done) / rate:.0f} s left" if rate and done < total else ""
        log(f"{what}: {done}/{total} ({100 * done / total:.0f}%), {rate:.1f}/s{left}")

    return progress
