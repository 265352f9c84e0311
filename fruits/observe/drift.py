"""Drift: are the live answers distributed as the answers on the validation photos were?

A model that users photograph something new for does not fail: it answers, with less confidence,
more often "unknown", or with one class far more often than it ever did. Each training stores the
distribution of its answers on the validation photos (the photos it never saw, answered by the
calibrated held-out model) in its report; the dashboard and ``fruits status --check`` compare the
answers of the last hour with it.

Two simple, documented statistics, each the total variation distance (half the L1 distance, 0: the
same distribution, 1: disjoint) between the reference and the live shares:

* ``confidence``: over ten equal bins of the top class probability;
* ``answers``: over the answered labels, "unknown" counted as one more answer.

The answer mix drifts legitimately (users photograph apples in autumn), so by default only the
confidence distance is checked (``health.max_confidence_drift``); the answer distance is shown and
can be checked too (``health.max_answer_drift``).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc

if TYPE_CHECKING:
    import pyarrow as pa

    from fruits.config import Config
    from fruits.model.registry import ModelRegistry

__all__ = [
    "CONFIDENCE_BINS",
    "DRIFT_COLUMNS",
    "UNKNOWN",
    "AnswerDistribution",
    "Drift",
    "answer_distribution",
    "compare",
    "drift_of",
    "measure_drift",
    "total_variation",
]

CONFIDENCE_BINS = 10
# The predictions' columns drift is measured on.
DRIFT_COLUMNS = ["label", "confidence", "is_unknown", "model_version", "predicted_at"]
UNKNOWN = "(unknown)"  # the answer "unknown", as a category beside the labels


@dataclass(frozen=True)
class AnswerDistribution:
    """Shares of ``n`` answers: per answered label (``UNKNOWN`` for "unknown"), and per bin of
    the top class probability (``CONFIDENCE_BINS`` equal bins over [0, 1])."""

    n: int
    answers: dict[str, float]
    confidence: list[float]

    @property
    def unknown_share(self) -> float:
        return self.answers.get(UNKNOWN, 0.0)

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "answers": self.answers, "confidence": self.confidence}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnswerDistribution:
        return cls(
            int(data["n"]),
            {str(k): float(v) for k, v in data["answers"].items()},
            [float(v) for v in data["confidence"]],
        )


def answer_distribution(
    labels: Sequence[str | None],
    confidences: Sequence[float | None],
    is_unknown: Sequence[bool | None],
) -> AnswerDistribution:
    """The distribution of these answers (one entry per photo, as in the predictions table)."""
    n = len(labels)
    if not n:
        return AnswerDistribution(0, {}, [0.0] * CONFIDENCE_BINS)
    answers = Counter(
        UNKNOWN if unknown or label is None else label
        for label, unknown in zip(labels, is_unknown, strict=True)
    )
    values = np.clip(np.asarray([c or 0.0 for c in confidences], dtype=np.float64), 0.0, 1.0)
    # The top bin is closed: a probability of exactly 1.0 falls in it.
    counts, _ = np.histogram(values, bins=CONFIDENCE_BINS, range=(0.0, 1.0))
    return AnswerDistribution(
        n,
        {k: round(v / n, 6) for k, v in sorted(answers.items())},
        [round(float(c) / n, 6) for c in counts],
    )


def total_variation(
    p: Mapping[str, float] | Sequence[float], q: Mapping[str, float] | Sequence[float]
) -> float:
    """Half the L1 distance between two distributions (shares), over the union of their keys."""
    if isinstance(p, Mapping) and isinstance(q, Mapping):
        keys = set(p) | set(q)
        return round(0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys), 6)
    a, b = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    return round(float(0.5 * np.abs(a - b).sum()), 6)


@dataclass(frozen=True)
class Drift:
    """The live answers of one model version against its training's validation answers."""

    model_version: int | None
    reference: AnswerDistribution
    live: AnswerDistribution
    confidence: float  # total variation over the confidence bins
    answers: float  # total variation over the answers, "unknown" included

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "n_reference": self.reference.n,
            "n_live": self.live.n,
            "confidence_drift": self.confidence,
            "answer_drift": self.answers,
            "unknown_share_reference": self.reference.unknown_share,
            "unknown_share_live": self.live.unknown_share,
            "confidence_reference": self.reference.confidence,
            "confidence_live": self.live.confidence,
        }


def compare(
    reference: AnswerDistribution, live: AnswerDistribution, *, model_version: int | None = None
) -> Drift:
    return Drift(
        model_version,
        reference,
        live,
        total_variation(reference.confidence, live.confidence),
        total_variation(reference.answers, live.answers),
    )


def measure_drift(
    config: Config, *, window: dt.timedelta, now: dt.datetime | None = None
) -> Drift | None:
    """The answers of the last ``window`` by the version that served last in it, against that
    version's validation answers; None when nothing was answered in the window or the version's
    report has no reference (trained by a release before it was stored)."""
    from fruits.model.registry import ModelRegistry
    from fruits.observe.status import recent_rows
    from fruits.sinks.delta import open_lake
    from fruits.sinks.tables import PREDICTIONS

    since = (now or dt.datetime.now(dt.UTC)) - window
    rows, _ = recent_rows(open_lake(config), PREDICTIONS, "predicted_at", since, DRIFT_COLUMNS)
    return drift_of(
        rows.filter(pc.greater_equal(rows.column("predicted_at"), since)), ModelRegistry(config)
    )


def drift_of(rows: pa.Table, registry: ModelRegistry) -> Drift | None:
    """Drift of these prediction rows (``DRIFT_COLUMNS``, already cut to the window): those of
    the version that answered the newest of them, against its training's validation answers."""
    if not rows.num_rows:
        return None
    newest = pc.index(rows.column("predicted_at"), pc.max(rows.column("predicted_at")))
    version = rows.column("model_version")[newest.as_py()].as_py()
    if version is None:
        return None
    report = registry.training_report(int(version))
    reference = ((report or {}).get("validation") or {}).get("answers")
    if not reference:
        return None
    served = rows.filter(pc.equal(rows.column("model_version"), version))
    live = answer_distribution(
        served.column("label").to_pylist(),
        served.column("confidence").to_pylist(),
        served.column("is_unknown").to_pylist(),
    )
    return compare(AnswerDistribution.from_dict(reference), live, model_version=int(version))
