"""The streaming job on real photos: exact batches, quarantine, hot-swap, folder landing, replay."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from fruits.config import Config
from fruits.console import log
from fruits.features.featurizer import ExtractorSpec
from fruits.model.registry import CHAMPION, ModelRegistry
from fruits.model.scoring import predict_frame
from fruits.model.serving import ServedModel
from fruits.observe.status import collect_status, format_status
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE
from fruits.sources.landing import landing_source
from fruits.upload import plan_upload, upload_to_folder
from streaming.job import (
    CheckpointInUseError,
    checkpoint_lock,
    checkpoint_path,
    run_stream,
    start_query,
)
from tests.memory_source import MemoryFeed, register

from .conftest import KNOWN_CLASSES, real_photos

pytestmark = pytest.mark.spark


def _table(config: Config, table: str) -> pa.Table:
    return DeltaRsLake(config.path("lake")).read_arrow(table)


def _photo_rows(label: str, n: int, skip: int = 1) -> list[tuple[str, bytes, dt.datetime]]:
    now = dt.datetime.now(dt.UTC)
    return [
        (f"mem://{label}/{p.name}", p.read_bytes(), now)
        for p in real_photos("Test", label, n, skip=skip)
    ]


def test_exact_batches_give_labels_and_bad_files_go_to_quarantine(
    memory_query: Any, stream_config: Config
) -> None:
    feed, query, step = memory_query
    good = [row for label in KNOWN_CLASSES for row in _photo_rows(label, 1)]
    sha256 = {path: hashlib.sha256(content).hexdigest() for path, content, _ in good}
    now = dt.datetime.now(dt.UTC)
    feed.add([*good, ("mem://notes.jpg", b"shopping list: kiwis\n", now)])
    query.processAllAvailable()
    feed.add([*_photo_rows("Kiwi", 2, skip=2), ("mem://empty.jpg", b"", now)])
    query.processAllAvailable()

    predictions = _table(stream_config, PREDICTIONS).to_pylist()
    quarantine = _table(stream_config, QUARANTINE).to_pylist()
    assert len(predictions) == 6
    assert {r["batch_id"] for r in predictions} == {0, 1}
    first = [r for r in predictions if r["batch_id"] == 0]
    correct = sum(r["label"] == r["path"].split("/")[2] for r in first)
    assert correct >= 3, first  # four real held-out photos of four classes
    kiwis = [r for r in predictions if r["batch_id"] == 1]
    assert [r["label"] for r in kiwis] == ["Kiwi", "Kiwi"]
    assert {(r["path"], r["reason"], r["batch_id"]) for r in quarantine} == {
        ("mem://notes.jpg", "not_an_image", 0),
        ("mem://empty.jpg", "empty", 1),
    }
    for row in predictions:
        assert row["model_version"] == 1
        assert len(row["top_k"]) == 3
        assert row["top_k"][0]["label"] == row["label"]
        assert row["top_k"][0]["prob"] == row["confidence"] >= row["top_k"][1]["prob"]
        # The kind level: one variety per kind here, so the kind is the label's, as sure.
        assert row["kind"] == row["label"].lower()
        assert row["kind_confidence"] == pytest.approx(row["confidence"])
        assert row["variety_not_sure"] is False
        assert row["uploaded_at"] <= row["discovered_at"] <= row["predicted_at"]
        assert row["latency_ms"] >= 0
        assert row["image_id"] == sha256.get(row["path"], row["image_id"])
        assert len(row["image_id"]) == 64
    assert {r["path"] for r in predictions} >= sha256.keys()
    # The quarantine keeps the hash of bytes that are not a photo: it identifies the upload.
    assert {r["image_id"] for r in quarantine} == {
        hashlib.sha256(b"shopping list: kiwis\n").hexdigest(),
        hashlib.sha256(b"").hexdigest(),
    }
    assert [o.rows_in for o in step.outcomes] == [5, 3]


def test_promoting_a_version_mid_stream_swaps_from_the_next_batch(
    memory_query: Any, stream_config: Config, tmp_path: Path
) -> None:
    feed, query, _ = memory_query
    feed.add(_photo_rows("Banana", 1))
    query.processAllAvailable()

    # `fruits promote V` is registry.promote: the 'champion' alias moves in MLflow's registry.
    registry = ModelRegistry(stream_config)
    files, model = registry.load(1)
    second = registry.register(model, ExtractorSpec.for_model(stream_config, files.meta))
    assert registry.promote(second.version) == 1
    feed.add(_photo_rows("Banana", 1, skip=3))
    query.processAllAvailable()

    # A champion whose files cannot be read: logged, and the last good one keeps serving.
    broken = registry.client.create_model_version(
        registry.name, source=(tmp_path / "no-such-model").as_uri()
    )
    registry.promote(int(broken.version))
    feed.add(_photo_rows("Banana", 1, skip=5))
    query.processAllAvailable()

    # No champion at all (the alias removed): same, the last good one keeps serving.
    registry.client.delete_registered_model_alias(registry.name, CHAMPION)
    feed.add(_photo_rows("Banana", 1, skip=7))
    query.processAllAvailable()

    versions = {
        r["batch_id"]: r["model_version"] for r in _table(stream_config, PREDICTIONS).to_pylist()
    }
    assert versions == {0: 1, 1: second.version, 2: second.version, 3: second.version}
    assert query.isActive


def test_a_served_version_builds_its_udf_once(stream_config: Config) -> None:
    """The UDF carries the scorer and detector (megabytes) pickled; one per micro-batch was
    pickled and broadcast again every batch. The same version keeps the same UDF object."""
    served = ServedModel(stream_config, log=log)
    first = served.refresh()
    assert served.refresh() is first and served.refresh().udf is first.udf


def test_folder_landing_end_to_end_with_crash_replay(spark: Any, stream_config: Config) -> None:
    config = stream_config
    served = ServedModel(config, log=log)
    checkpoint = checkpoint_path(config)
    query, _ = start_query(
        spark, config, landing_source(spark, config, checkpoint), served=served, once=False
    )
    try:
        # Photos dropped while the query runs, through the uploader (hidden name, then rename).
        for label in KNOWN_CLASSES[:2]:
            files = [str(p) for p in real_photos("Test", label, 3, skip=1)]
            upload_to_folder(plan_upload(files, ["jpg"]), config.path("landing"))
            query.processAllAvailable()
    finally:
        query.stop()
    assert _table(config, PREDICTIONS).num_rows == 6

    # Crash between the Delta commits and the checkpoint commit: the batch is replayed.
    photo = real_photos("Test", "Kiwi", 1)[0].read_bytes()
    (Path(config.path("landing")) / "broken.jpg").write_bytes(photo[: len(photo) // 2])

    def crash(outcome: Any) -> None:
        raise RuntimeError(f"crash after the Delta commits of batch {outcome.batch_id}")

    query, _ = start_query(
        spark,
        config,
        landing_source(spark, config, checkpoint),
        served=served,
        once=True,
        on_batch=crash,
    )
    with pytest.raises(Exception, match="crash after the Delta commits"):
        query.awaitTermination()
    assert _table(config, QUARANTINE).column("reason").to_pylist() == ["truncated"]
    result = run_stream(config, once=True)
    assert result["rows_in"] == 1  # the replayed batch was read again...
    assert _table(config, PREDICTIONS).num_rows == 6  # ...and written nothing twice
    assert _table(config, QUARANTINE).num_rows == 1

    again = run_stream(config, once=True)  # a restart reprocesses nothing
    assert again["rows_in"] == 0
    status = collect_status(config)
    assert (status["predictions_rows"], status["quarantine_rows"]) == (6, 1)
    assert status["recent_distinct_paths"] == 6 and status["model_version"] == 1
    assert status["latency_rows"] == 6 and status["latency_p50_ms"] > 0
    # The answers themselves: the newest first, the truncated photo with its reason.
    newest = status["last_predictions"]
    assert len(newest) == 5 and newest[0]["predicted_at"] >= newest[-1]["predicted_at"]
    uploaded = {
        p.name for label in KNOWN_CLASSES[:2] for p in real_photos("Test", label, 3, skip=1)
    }
    assert {row["path"].rsplit("/", 1)[-1] for row in newest} <= uploaded
    assert all(isinstance(row["label"], str) and 0 < row["confidence"] <= 1 for row in newest)
    ((quarantined),) = status["last_quarantined"]
    assert quarantined["path"].endswith("broken.jpg") and quarantined["reason"] == "truncated"
    shown = format_status(status)
    assert "last predictions" in shown and "truncated" in shown and "broken.jpg" in shown


def test_a_second_query_on_the_same_checkpoint_is_refused(stream_config: Config) -> None:
    with (
        checkpoint_lock(checkpoint_path(stream_config)),
        pytest.raises(CheckpointInUseError, match="in use by pid"),
    ):
        run_stream(stream_config, once=True)


def test_a_batch_past_its_timeout_fails_the_query_and_is_replayed_once(
    spark: Any, stream_config: Config, tmp_path: Path
) -> None:
    from pyspark.errors import StreamingQueryException

    register(spark)
    feed = MemoryFeed(tmp_path / "feed")
    feed.add(_photo_rows("Kiwi", 3))
    checkpoint = str(tmp_path / "checkpoint")

    def query_with(config: Config) -> Any:
        source = spark.readStream.format("fruits_memory").option("feed", str(feed.folder)).load()
        served = ServedModel(config, log=log)
        return start_query(spark, config, source, served=served, once=False, checkpoint=checkpoint)[
            0
        ]

    impatient = dataclasses.replace(
        stream_config, stream=dataclasses.replace(stream_config.stream, batch_timeout_s=0.05)
    )
    query = query_with(impatient)
    try:
        with pytest.raises(StreamingQueryException, match="batch_timeout_s"):
            query.processAllAvailable()
    finally:
        query.stop()
    assert _table(stream_config, PREDICTIONS).num_rows == 0

    query = query_with(stream_config)  # the restart replays batch 0, once
    try:
        query.processAllAvailable()
    finally:
        query.stop()
    rows = _table(stream_config, PREDICTIONS).to_pylist()
    assert [(r["batch_id"], r["label"]) for r in rows] == [(0, "Kiwi")] * 3


def test_a_tree_model_is_scored_by_spark_ml_with_the_same_contract(
    spark: Any, memory_query: Any, stream_config: Config, trained: tuple[Config, dict[str, Any]]
) -> None:
    from fruits.config import TrainingConfig
    from fruits.model.classifier import train
    from fruits.sinks.tables import FEATURES

    feed, query, step = memory_query
    registry = ModelRegistry(stream_config)
    files, linear = registry.load(1)
    features = DeltaRsLake(trained[0].path("lake")).read_arrow(FEATURES)
    settings = TrainingConfig(classifiers=("decision_tree",), classifier="decision_tree")
    tree = train(
        spark.createDataFrame(features.select(["image_id", "path", "label", "features"])),
        settings,
        extractor=linear.extractor,
    ).model
    assert linear.linear_scorer() is not None and tree.linear_scorer() is None
    spec = ExtractorSpec.for_model(stream_config, files.meta)
    version = registry.register(tree, spec, tags={"classifier": "decision_tree"})
    registry.promote(version.version)

    feed.add([*_photo_rows("Kiwi", 2, skip=2), ("mem://a.jpg", b"GIF89a", dt.datetime.now(dt.UTC))])
    query.processAllAvailable()

    rows = _table(stream_config, PREDICTIONS).to_pylist()
    assert [(r["model_version"], r["label"]) for r in rows] == [(version.version, "Kiwi")] * 2
    assert all(r["top_k"][0] == {"label": r["label"], "prob": r["confidence"]} for r in rows)
    assert _table(stream_config, QUARANTINE).column("reason").to_pylist() == ["not_an_image"]
    last = step.outcomes[-1]
    assert (last.predictions, last.quarantined, last.model_version) == (2, 1, version.version)

    # The same version as a pyfunc (a tree: scored by Spark ML in this process' session).
    import mlflow

    registry.use()
    pyfunc = mlflow.pyfunc.load_model(f"models:/{registry.name}/{version.version}")
    photos = [*_photo_rows("Kiwi", 2, skip=2), ("mem://a.jpg", b"GIF89a", dt.datetime.now(dt.UTC))]
    answered = pyfunc.predict(pd.DataFrame({"content": [content for _, content, _ in photos]}))
    assert answered["label"].tolist() == ["Kiwi", "Kiwi", ""]
    streamed = sorted(r["confidence"] for r in rows)
    assert sorted(answered["confidence"][:2]) == pytest.approx(streamed, rel=1e-6)
    assert answered["reason"].tolist() == ["", "", "not_an_image"]
    assert answered["kind"].tolist() == ["kiwi", "kiwi", ""]
    assert answered["variety_not_sure"].tolist() == [False, False, False]
    assert answered["kind_confidence"][2] is None


def test_a_model_on_efficientnet_lite0_is_trained_then_served_by_the_stream(
    spark: Any, small_dataset: Path, make_config: Callable[..., Config], tmp_path: Path
) -> None:
    from batch.train import run_training

    config = make_config(
        tmp_path,
        FRUITS__FEATURIZER__BACKBONE="efficientnet_lite0",
        FRUITS__FEATURIZER__IMAGE_SIZE="224",
        FRUITS__FEATURIZER__CENTRE_CROP="0.7",
    )
    summary = run_training(config, str(small_dataset))
    assert summary["accuracy_test"] >= 0.9  # 20 held-out photos of 4 classes
    files = ModelRegistry(config).files()
    meta = files.meta
    assert meta["backbone"] == "efficientnet_lite0" and meta["image_size"] == 224
    assert meta["centre_crop"] == 0.7
    assert meta["extractor"].startswith("efficientnet_lite0/avg+centre0.7/224/sha256:")
    label_of = {
        p.name: label for label in KNOWN_CLASSES for p in real_photos("Test", label, 1, skip=2)
    }
    photos = [str(p) for label in KNOWN_CLASSES for p in real_photos("Test", label, 1, skip=2)]
    upload_to_folder(plan_upload(photos, ["jpg"]), config.path("landing"))
    # The stream featurizes with the model's backbone and crop, whatever the configuration says.
    serving = make_config(tmp_path)
    assert serving.featurizer.backbone == "inception_v3" and serving.featurizer.centre_crop == 1
    result = run_stream(serving, once=True)
    assert result["rows_in"] == len(KNOWN_CLASSES)
    predictions = _table(serving, PREDICTIONS).to_pylist()
    right = sum(r["label"] == label_of[r["path"].rsplit("/", 1)[-1]] for r in predictions)
    assert len(predictions) == 4 and right >= 3, predictions
    # Its confidences are those of the cropped features, not of the whole photo's alone.
    scorer = files.scorer()
    assert scorer is not None
    contents = pd.Series([Path(p).read_bytes() for p in photos])
    names = [Path(p).name for p in photos]
    confidence = {r["path"].rsplit("/", 1)[-1]: r["confidence"] for r in predictions}
    streamed = [confidence[name] for name in names]

    # Compared as the doubt left, 1 - confidence, on a log scale: a confidence near 1 moves
    # little in absolute terms when the features change.
    def doubt_gap(a: float, b: float) -> float:
        return abs(math.log((1 - a + 1e-12) / (1 - b + 1e-12)))

    for crop, matches in ((0.7, True), (1.0, False)):
        spec = dataclasses.replace(ExtractorSpec.for_model(serving, meta), centre_crop=crop)
        expected = predict_frame(contents, spec, scorer)["confidence"].tolist()
        gap = max(doubt_gap(a, b) for a, b in zip(streamed, expected, strict=True))
        assert (gap < 0.01) is matches, (crop, gap, streamed, expected)
