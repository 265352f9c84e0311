"""``fruits status --check``: the health rules, each a figure against a threshold (``health``).

Read-only, like ``fruits status``: the tables' recent rows (through Delta's file statistics), a
listing of the landing, and the stream's discovery state and commit log in its checkpoint,
opened read-only (a stream may run at the same time; it is never written).

A rule is a function of one :class:`Observed` (what the rules read, each part read once and
only when a rule asks for it) that returns a :class:`Finding`; :data:`RULES` lists them in the
order they are reported, so one more rule is one more function in that list.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from fruits.config import Config, interval_seconds, is_url
from fruits.errors import FruitsError
from fruits.observe.drift import DRIFT_COLUMNS, Drift, drift_of
from fruits.sinks.delta import Lake, open_lake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE

__all__ = [
    "RULES",
    "Backlog",
    "CannotCheck",
    "Finding",
    "Observed",
    "check_health",
    "format_findings",
]

_WEEK = dt.timedelta(days=7)


@dataclass(frozen=True)
class Finding:
    """One rule's verdict: ``message`` gives the measured figure and its threshold.
    ``evaluated`` is False where the rule cannot be judged in this environment (it then
    passes, and the message says why)."""

    rule: str
    ok: bool
    message: str
    evaluated: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Backlog:
    """The photos in the landing that no committed micro-batch holds yet."""

    waiting: int
    oldest_at: dt.datetime | None  # when the oldest of them landed
    last_commit_at: dt.datetime | None  # the checkpoint's newest committed micro-batch
    has_state: bool  # False: the stream never ran on this checkpoint (everything waits)


class Observed:
    """What the rules look at, at one instant ``now``; each part is read on first use."""

    def __init__(self, config: Config, now: dt.datetime) -> None:
        self.config = config
        self.now = now
        self.window = dt.timedelta(seconds=interval_seconds(config.health.window))

    @cached_property
    def lake(self) -> Lake:
        return open_lake(self.config)

    @cached_property
    def backlog(self) -> Backlog | None:
        """None with Auto Loader (Databricks), whose discovery state is not this source's."""
        if self.config.stream.autoloader:
            return None
        return landing_backlog(self.config, now=self.now)

    @cached_property
    def predictions(self) -> pa.Table:
        """Predictions of the window, with the columns the share and drift rules read."""
        return self._recent(PREDICTIONS, "predicted_at", DRIFT_COLUMNS)

    @cached_property
    def quarantine(self) -> pa.Table:
        """Quarantine rows of the window (``detected_at``, ``reason``)."""
        return self._recent(QUARANTINE, "detected_at", ["detected_at", "reason"])

    @cached_property
    def last_week(self) -> pa.Table:
        """Predictions of the 7 days before the window (read only when a rule needs them)."""
        end = self.now - self.window
        columns = ["predicted_at", "is_unknown"]
        return self._recent(PREDICTIONS, "predicted_at", columns, start=end - _WEEK, end=end)

    @cached_property
    def drift(self) -> Drift | None:
        """The window's answers against the serving version's validation answers (the rows
        the share rules read, not a second read of the table)."""
        from fruits.model.registry import ModelRegistry

        return drift_of(self.predictions, ModelRegistry(self.config))

    @cached_property
    def last_batch_at(self) -> dt.datetime | None:
        """The newest committed micro-batch: the tables' newest rows, or the checkpoint's
        commit log (a batch of no photo writes no row)."""
        times = [
            self.lake.latest(PREDICTIONS, "predicted_at"),
            self.lake.latest(QUARANTINE, "detected_at"),
            self.backlog.last_commit_at if self.backlog else None,
        ]
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def _recent(
        self,
        table: str,
        column: str,
        columns: list[str],
        *,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> pa.Table:
        """Rows from ``start`` (default: the window's start) to before ``end`` (default: no
        end), read through the files' statistics."""
        from fruits.observe.status import recent_rows

        start = start or self.now - self.window
        rows, _ = recent_rows(self.lake, table, column, start, columns)
        # recent_rows falls back to the newest rows when none are that recent: cut to the span.
        keep = pc.greater_equal(rows.column(column), start)
        if end is not None:
            keep = pc.and_(keep, pc.less(rows.column(column), end))
        return rows.filter(keep)


Rule = Callable[[Observed], Finding]


class CannotCheck(FruitsError):
    """A rule could not read what it judges (a table, the landing, the checkpoint): the
    health is unknown, which is not the same as unhealthy (the CLI exits 2, not 1)."""


def _seconds(value: float) -> str:
    return f"{value:.0f} s"


def _photos(n: int) -> str:
    return f"{n} photo{'' if n == 1 else 's'}"


def stream_behind(observed: Observed) -> Finding:
    """The oldest photo waiting in the landing is older than ``max_upload_wait_s``."""
    limit = observed.config.health.max_upload_wait_s
    backlog = observed.backlog
    if backlog is None:
        return _not_evaluated("stream_behind")
    if backlog.oldest_at is None:
        return Finding("stream_behind", True, f"no photo waits (limit {_seconds(limit)})")
    age = (observed.now - backlog.oldest_at).total_seconds()
    return Finding(
        "stream_behind",
        age <= limit,
        f"{_photos(backlog.waiting)} wait, the oldest for {_seconds(age)} "
        f"(limit {_seconds(limit)}){'' if backlog.has_state else '; the stream never ran'}",
    )


def stream_stalled(observed: Observed) -> Finding:
    """Photos wait, and no micro-batch was committed for more than ``max_batch_gap_s`` since
    they started waiting (a quiet night before the first photo is no stall)."""
    limit = observed.config.health.max_batch_gap_s
    backlog = observed.backlog
    if backlog is None:
        return _not_evaluated("stream_stalled")
    last = observed.last_batch_at
    when = f"last batch at {last.isoformat(timespec='seconds')}" if last else "no batch ever"
    if backlog.oldest_at is None:
        return Finding("stream_stalled", True, f"no photo waits; {when}")
    since = max(backlog.oldest_at, last) if last else backlog.oldest_at
    gap = (observed.now - since).total_seconds()
    return Finding(
        "stream_stalled",
        gap <= limit,
        f"{_photos(backlog.waiting)} wait and no batch committed for {_seconds(gap)} "
        f"(limit {_seconds(limit)}); {when}",
    )


def unknown_share(observed: Observed) -> Finding:
    """The window's share of "unknown" answers above ``max_unknown_share``, or above
    ``unknown_vs_last_week`` times the 7 days before's (at least one unknown that week is
    assumed, so a week without any does not make one unknown photo an alarm)."""
    health = observed.config.health
    rows = observed.predictions
    photos = rows.num_rows
    span = health.window
    if photos < health.min_photos:
        return _too_few("unknown_share", photos, span, health.min_photos)
    unknown = int(pc.sum(rows.column("is_unknown")).as_py() or 0)
    share = unknown / photos
    message = (
        f"{unknown} of {photos} answers unknown in the last {span} ({share:.0%}; "
        f"limit {health.max_unknown_share:.0%}"
    )
    if share > health.max_unknown_share:
        return Finding("unknown_share", False, message + ")")
    week = observed.last_week
    if week.num_rows < health.min_week_photos:
        return Finding(
            "unknown_share",
            True,
            message + f"; the 7 days before: {week.num_rows} photos, fewer than "
            f"{health.min_week_photos}, not compared)",
        )
    week_unknown = int(pc.sum(week.column("is_unknown")).as_py() or 0)
    baseline = max(week_unknown, 1) / week.num_rows
    limit = health.unknown_vs_last_week * baseline
    return Finding(
        "unknown_share",
        share <= limit,
        message + f", or {health.unknown_vs_last_week:g} x the 7 days before's "
        f"{week_unknown / week.num_rows:.1%} = {limit:.1%})",
    )


def quarantine_share(observed: Observed) -> Finding:
    """Quarantined / (predicted + quarantined) in the window above ``max_quarantine_share``."""
    health = observed.config.health
    quarantined = observed.quarantine.num_rows
    photos = observed.predictions.num_rows + quarantined
    span = health.window
    if photos < health.min_photos:
        return _too_few("quarantine_share", photos, span, health.min_photos)
    share = quarantined / photos
    reasons = pc.value_counts(observed.quarantine.column("reason")).to_pylist()
    top = sorted(reasons, key=lambda r: (-r["counts"], r["values"]))[:3]
    why = ", ".join(f"{r['values']} {r['counts']}" for r in top)
    return Finding(
        "quarantine_share",
        share <= health.max_quarantine_share,
        f"{quarantined} of {photos} photos quarantined in the last {span} ({share:.0%}; "
        f"limit {health.max_quarantine_share:.0%}){f': {why}' if why else ''}",
    )


def drift(observed: Observed) -> Finding:
    """The window's answers of the serving version against its training's validation answers
    (fruits/observe/drift.py): the confidence distribution's distance above
    ``max_confidence_drift``, or the answers' above ``max_answer_drift`` when that is set."""
    health = observed.config.health
    measured = observed.drift
    if measured is None:
        return Finding(
            "drift",
            True,
            f"nothing to compare: no answers in the last {health.window}, or "
            "the serving version's report holds no validation answers",
        )
    if measured.live.n < health.min_photos:
        return _too_few("drift", measured.live.n, health.window, health.min_photos)
    too_far = measured.confidence > health.max_confidence_drift or (
        health.max_answer_drift is not None and measured.answers > health.max_answer_drift
    )
    answer_limit = (
        f"{health.max_answer_drift:.2f}" if health.max_answer_drift is not None else "not checked"
    )
    return Finding(
        "drift",
        not too_far,
        f"model version {measured.model_version}, {measured.live.n} answers in the last "
        f"{health.window} against {measured.reference.n} on validation: confidence distance "
        f"{measured.confidence:.2f} (limit {health.max_confidence_drift:.2f}), answers "
        f"{measured.answers:.2f} (limit {answer_limit}); unknown {measured.live.unknown_share:.0%} "
        f"(validation {measured.reference.unknown_share:.0%})",
    )


RULES: list[Rule] = [stream_behind, stream_stalled, unknown_share, quarantine_share, drift]


def check_health(config: Config, *, now: dt.datetime | None = None) -> list[Finding]:
    """Every rule of :data:`RULES`, judged at ``now`` (default: the current time)."""
    observed = Observed(config, now or dt.datetime.now(dt.UTC))
    findings = []
    for rule in RULES:
        try:
            findings.append(rule(observed))
        except FruitsError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CannotCheck(
                f"could not check {rule.__name__}: {type(exc).__name__}: {first}"
            ) from exc
    return findings


def format_findings(findings: list[Finding]) -> str:
    """Failed rules first, one line each (``FAIL rule: message``), then the others briefly."""
    failed = [f for f in findings if not f.ok]
    lines = [f"FAIL {f.rule}: {f.message}" for f in failed]
    lines += [f"ok   {f.rule}: {f.message}" for f in findings if f.ok]
    verdict = f"unhealthy: {len(failed)} rule(s) failed" if failed else "healthy"
    return "\n".join([*lines, verdict])


def _not_evaluated(rule: str) -> Finding:
    return Finding(
        rule,
        True,
        "not evaluated with Auto Loader (stream.autoloader): its discovery state is "
        "Databricks' own (cloud_files_state), not readable here; the bundle's SQL alerts "
        "(resources/alerts.yml) judge this rule there",
        evaluated=False,
    )


def _too_few(rule: str, photos: int, span: str, minimum: int) -> Finding:
    return Finding(
        rule, True, f"no judgement: {photos} photos in the last {span}, fewer than {minimum}"
    )


# -- the landing against the stream's checkpoint ------------------------------------------------


def checkpoint_folder(config: Config) -> Path | None:
    """The stream's checkpoint (streaming.job.checkpoint_path, not imported: that module
    loads Spark), or None when it is a URL (the project's source refuses one)."""
    location = f"{config.path('checkpoints').rstrip('/')}/{config.stream.query_name}"
    return None if is_url(location) else Path(location)


def landing_backlog(config: Config, *, now: dt.datetime) -> Backlog:
    """What the landing holds that no committed micro-batch does, by the source's own rules:
    the same listing (extensions, ``stream.path_glob``, hidden names), minus what the stream's
    discovery state says is committed; files older than ``stream.max_file_age`` behind the
    newest are ignored by the source, so they do not wait either. With no state yet (the stream
    never ran on this checkpoint), every listed photo waits."""
    from fruits.sources.names import NameFilter
    from fruits.sources.stores import landing_store

    store = landing_store(config.path("landing"), config.azure)
    accept = NameFilter(config.images.extensions, config.stream.path_glob, under=store.prefix)
    listed = [(b.name, b.etag, b.last_modified.timestamp()) for b in store.list(accept)]
    checkpoint = checkpoint_folder(config)
    state = checkpoint / "discovery" / "state.sqlite" if checkpoint else None
    last_commit_at, committed_by_spark = _spark_commits(checkpoint) if checkpoint else (None, 0)
    max_age = interval_seconds(config.stream.max_file_age)
    if state is None or not state.exists():
        newest = max((m for _, _, m in listed), default=0.0)
        waiting = [m for _, _, m in listed if m >= newest - max_age]
        return _backlog(waiting, last_commit_at, has_state=False)
    waiting = _uncommitted(state, listed, committed_by_spark, max_age)
    return _backlog(waiting, last_commit_at, has_state=True)


def _backlog(
    waiting: list[float], last_commit_at: dt.datetime | None, *, has_state: bool
) -> Backlog:
    oldest = dt.datetime.fromtimestamp(min(waiting), dt.UTC) if waiting else None
    return Backlog(len(waiting), oldest, last_commit_at, has_state)


def _uncommitted(
    state: Path, listed: list[tuple[str, str, float]], committed: int, max_age: float
) -> list[float]:
    """Modification times of the listed files the state has not seen, or has offered in an
    arrival past the committed offset (the larger of its own and Spark's commit log: Spark
    tells the source of a commit only when it plans the next batch)."""
    # mode=ro: the stream's file is never written; WAL lets this read while the stream writes.
    db = sqlite3.connect(f"{state.resolve().as_uri()}?mode=ro", uri=True)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        committed = max(committed, int(meta.get("committed", 0)))
        newest = max((m for _, _, m in listed), default=0.0)
        horizon = max(float(meta.get("high_water", 0.0)), newest) - max_age
        db.execute("CREATE TEMP TABLE listing (name TEXT, etag TEXT, modified REAL)")
        db.executemany("INSERT INTO listing VALUES (?, ?, ?)", listed)
        rows = db.execute(
            "SELECT l.modified FROM listing AS l WHERE l.modified >= ? AND ("
            " NOT EXISTS (SELECT 1 FROM seen AS s WHERE s.name = l.name AND s.etag = l.etag)"
            " OR EXISTS (SELECT 1 FROM arrivals AS a"
            "  WHERE a.name = l.name AND a.etag = l.etag AND a.seq > ?))",
            (horizon, committed),
        ).fetchall()
    finally:
        db.close()
    return [m for (m,) in rows]


def _spark_commits(checkpoint: Path) -> tuple[dt.datetime | None, int]:
    """When Spark committed its newest micro-batch, and the source's offset it ended at
    (``{"seq": n}`` in the offset log; 0 when unknown)."""
    commits = [p for p in checkpoint.glob("commits/[0-9]*") if p.name.isdigit()]
    if not commits:
        return None, 0
    newest = max(commits, key=lambda p: int(p.name))
    try:
        at = dt.datetime.fromtimestamp(newest.stat().st_mtime, dt.UTC)
    except FileNotFoundError:  # compacted away by Spark meanwhile: the tables still tell
        return None, 0
    try:
        # Spark's offset log: "v1", the batch metadata, then one line per source.
        end = json.loads((checkpoint / "offsets" / newest.name).read_text().splitlines()[2])
    except (OSError, IndexError, ValueError):
        return at, 0
    seq = end.get("seq") if isinstance(end, dict) else None
    return at, seq if isinstance(seq, int) else 0
