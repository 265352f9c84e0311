"""Fault injection: the job dies between a batch's two Delta commits (quarantine committed,
predictions not), something changes, and the replay must append exactly what was decided the
first time: every photo in exactly one table, once."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fruits.config import Config
from fruits.console import log
from fruits.features.featurizer import ExtractorSpec
from fruits.model.registry import ModelRegistry
from fruits.model.serving import ServedModel
from fruits.sinks.delta import Txn, open_lake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE
from fruits.sources.landing import landing_source
from streaming.decisions import DecisionJournal
from streaming.job import checkpoint_path, run_stream, start_query

from .conftest import KNOWN_CLASSES, real_photos

pytestmark = pytest.mark.spark


class InjectedCrash(RuntimeError):
    pass


def _landing_with_a_bad_photo(config: Config) -> tuple[Path, list[str]]:
    """Three real photos and one truncated JPEG in the landing folder."""
    landing = Path(config.path("landing"))
    landing.mkdir(parents=True, exist_ok=True)
    names = []
    for photo in real_photos("Test", KNOWN_CLASSES[0], 3, skip=2):
        shutil.copyfile(photo, landing / photo.name)
        names.append(photo.name)
    whole = real_photos("Test", KNOWN_CLASSES[1], 1)[0].read_bytes()
    (landing / "half-uploaded.jpg").write_bytes(whole[: len(whole) // 3])
    return landing, [*names, "half-uploaded.jpg"]


def _crash_between_the_commits(spark: Any, config: Config, monkeypatch: Any) -> None:
    """One --once pass whose predictions commit never happens (the process 'dies' after the
    quarantine commit)."""
    from pyspark.errors import StreamingQueryException

    lake = open_lake(config)
    append = lake.append_arrow

    def crashing_append(data: pa.Table, table: str, *, txn: Txn | None = None) -> bool:
        if table == PREDICTIONS:
            raise InjectedCrash("the job died between the two Delta commits")
        return append(data, table, txn=txn)

    monkeypatch.setattr(lake, "append_arrow", crashing_append)
    checkpoint = checkpoint_path(config)
    query, _ = start_query(
        spark,
        config,
        landing_source(spark, config, checkpoint),
        served=ServedModel(config, log=log),
        once=True,
        lake=lake,
    )
    with pytest.raises(StreamingQueryException, match="between the two Delta commits"):
        query.awaitTermination()
    # The first commit is in, the second is not; the decision is on record.
    assert open_lake(config).read_arrow(QUARANTINE).num_rows == 1
    assert open_lake(config).read_arrow(PREDICTIONS).num_rows == 0
    assert DecisionJournal(f"{checkpoint}/decisions").batches() == [0]


def _each_photo_once(config: Config, names: list[str]) -> tuple[list[dict[str, Any]], str]:
    lake = open_lake(config)
    predictions = lake.read_arrow(PREDICTIONS).to_pylist()
    quarantine = lake.read_arrow(QUARANTINE).to_pylist()
    found = [Path(r["path"]).name for r in predictions + quarantine]
    assert sorted(found) == sorted(names)  # each one, in exactly one table, once
    ((bad),) = quarantine
    return predictions, bad["reason"]


@pytest.fixture
def crashed(
    spark: Any, stream_config: Config, monkeypatch: Any
) -> Callable[[], tuple[Path, list[str]]]:
    def crash() -> tuple[Path, list[str]]:
        landing, names = _landing_with_a_bad_photo(stream_config)
        _crash_between_the_commits(spark, stream_config, monkeypatch)
        return landing, names

    return crash


def test_a_photo_deleted_before_the_replay_is_still_answered_once(
    stream_config: Config, crashed: Callable[[], tuple[Path, list[str]]]
) -> None:
    landing, names = crashed()
    (landing / names[0]).unlink()  # the user deleted it; reading it again would fail

    result = run_stream(stream_config, once=True)

    assert result["batches"] == 1 and result["rows_in"] == 4
    predictions, reason = _each_photo_once(stream_config, names)
    assert reason == "truncated"
    assert {r["label"] for r in predictions} == {KNOWN_CLASSES[0]}
    assert run_stream(stream_config, once=True)["rows_in"] == 0  # nothing left to replay
    # The journal keeps no more than the batch Spark has not committed yet.
    assert DecisionJournal(f"{checkpoint_path(stream_config)}/decisions").batches() == [0]


def test_a_model_promoted_before_the_replay_does_not_change_the_answers(
    stream_config: Config, crashed: Callable[[], tuple[Path, list[str]]]
) -> None:
    landing, names = crashed()
    registry = ModelRegistry(stream_config)
    files, model = registry.load(1)
    second = registry.register(model, ExtractorSpec.for_model(stream_config, files.meta))
    registry.promote(second.version)
    # And the half-uploaded photo is whole now: deciding the batch again would predict it,
    # leaving that upload in both tables. The whole one is a new version of the name: a new
    # arrival, answered in a batch of its own after the replay.
    whole = real_photos("Test", KNOWN_CLASSES[1], 1)[0]
    shutil.copyfile(whole, landing / "half-uploaded.jpg")

    run_stream(stream_config, once=True)

    lake = open_lake(stream_config)
    replayed = lake.read_arrow(PREDICTIONS).filter(pc.equal(pc.field("batch_id"), 0))
    quarantined = lake.read_arrow(QUARANTINE).to_pylist()
    found = [Path(r["path"]).name for r in replayed.to_pylist() + quarantined]
    assert sorted(found) == sorted(names)  # the replayed batch: each upload once, as decided
    assert [r["reason"] for r in quarantined] == ["truncated"]
    assert set(replayed.column("model_version").to_pylist()) == {1}  # decided before the crash
    later = lake.read_arrow(PREDICTIONS).filter(pc.greater(pc.field("batch_id"), 0)).to_pylist()
    assert [(Path(r["path"]).name, r["model_version"]) for r in later] == [("half-uploaded.jpg", 2)]
    # New photos after the replay get the new champion.
    extra = real_photos("Test", KNOWN_CLASSES[0], 1, skip=9)[0]
    shutil.copyfile(extra, landing / "after.jpg")
    run_stream(stream_config, once=True)
    rows = open_lake(stream_config).read_arrow(PREDICTIONS).to_pylist()
    assert {r["model_version"] for r in rows if r["path"].endswith("after.jpg")} == {2}
