"""``fruits status --check`` through the real CLI on real Delta tables, a real landing folder and
the stream's real discovery state: each unhealthy state fails with its rule named and exit 1, a
stream that processed everything passes with exit 0, an unreadable table exits 2."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from fruits.azure import BlobInfo
from fruits.cli import main
from fruits.config import Config, interval_seconds
from fruits.observe.health import check_health, checkpoint_folder
from fruits.sinks.delta import open_lake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE
from fruits.sources.discovery import DiscoveryState
from fruits.sources.stores import FolderStore
from streaming.job import checkpoint_path, run_stream

from .conftest import KNOWN_CLASSES, PROJECT, WEIGHTS, copy_registry, real_photos

MakeConfig = Callable[..., Config]


def _config(
    make_config: MakeConfig, root: Path, monkeypatch: pytest.MonkeyPatch, **env: str
) -> Config:
    """The config of ``root`` with ``env``, the same for the CLI (through the environment)."""
    for name, value in {"FRUITS_ROOT": str(root), "FRUITS_WEIGHTS": str(WEIGHTS), **env}.items():
        monkeypatch.setenv(name, value)
    return make_config(root, **env)


def _check(capsys: Any, *extra: str) -> tuple[int, str, dict[str, Any]]:
    """``fruits status --check``: its exit code, its lines before the JSON, the JSON."""
    code = main(["status", "--check", "--config", str(PROJECT / "conf" / "local.yaml"), *extra])
    out = capsys.readouterr().out.splitlines()
    return code, "\n".join(out[:-1]), json.loads(out[-1])


def _failed(result: dict[str, Any]) -> list[str]:
    return [f["rule"] for f in result["findings"] if not f["ok"]]


def _predictions(n: int, *, unknown: int = 0, at: dt.datetime | None = None) -> pa.Table:
    """``n`` prediction rows as a micro-batch writes them, the first ``unknown`` answered so."""
    at = at or dt.datetime.now(dt.UTC)
    stamp = at.strftime("%H%M%S%f")
    return pa.table(
        {
            "image_id": [f"id-{stamp}-{i}" for i in range(n)],
            "path": [f"file:/landing/{stamp}-{i}.jpg" for i in range(n)],
            "label": ["Kiwi"] * n,
            "confidence": [0.3 if i < unknown else 0.95 for i in range(n)],
            "top_k": [[{"label": "Kiwi", "prob": 0.9}]] * n,
            "is_unknown": [i < unknown for i in range(n)],
            "model_version": [1] * n,
            "uploaded_at": [at] * n,
            "discovered_at": [at] * n,
            "predicted_at": [at] * n,
            "latency_ms": [120.0] * n,
            "batch_id": [0] * n,
            "kind": ["kiwi"] * n,
            "kind_confidence": [0.3 if i < unknown else 0.95 for i in range(n)],
            "variety_not_sure": [False] * n,
        }
    )


def _quarantined(n: int, reason: str, *, at: dt.datetime | None = None) -> pa.Table:
    at = at or dt.datetime.now(dt.UTC)
    stamp = at.strftime("%H%M%S%f")
    return pa.table(
        {
            "path": [f"file:/landing/bad-{stamp}-{i}.jpg" for i in range(n)],
            "image_id": [None] * n,
            "reason": [reason] * n,
            "detail": ["as written by the step"] * n,
            "size_bytes": [10] * n,
            "uploaded_at": [at] * n,
            "detected_at": [at] * n,
            "batch_id": [0] * n,
        }
    )


def _photo(folder: Path, name: str, skip: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    shutil.copy(real_photos("Test", "Kiwi", 1, skip=skip)[0], target)
    return target


def _info(store: FolderStore, name: str) -> BlobInfo:
    info = store.info(name)
    assert info is not None
    return info


def test_a_stalled_stream_with_photos_waiting_fails_behind_and_stalled(
    make_config: MakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    config = _config(
        make_config,
        tmp_path,
        monkeypatch,
        FRUITS__HEALTH__MAX_UPLOAD_WAIT_S="1",
        FRUITS__HEALTH__MAX_BATCH_GAP_S="1",
    )
    landing = Path(config.path("landing"))
    # The stream's state as the source keeps it: the first photo offered and committed (its
    # batch written an hour ago), the second offered in a batch not committed yet.
    _photo(landing, "done.jpg")
    open_lake(config).append_arrow(
        _predictions(1, at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)), PREDICTIONS
    )
    checkpoint = checkpoint_folder(config)
    assert checkpoint is not None and str(checkpoint) == checkpoint_path(config)
    store = FolderStore(str(landing))
    state = DiscoveryState.open(
        checkpoint / "discovery" / "state.sqlite",
        max_file_age_s=interval_seconds(config.stream.max_file_age),
    )
    (first,) = state.add([_info(store, "done.jpg")])
    state.commit(first.seq)
    state.save()
    time.sleep(1.5)
    code, shown, result = _check(capsys)
    assert (code, _failed(result)) == (0, []), shown  # everything there is committed
    assert "no photo waits" in shown

    _photo(landing, "offered.jpg", skip=1)
    state.add([_info(store, "offered.jpg")])
    state.save()
    state.close()
    _photo(landing / "sub", "new.JPG", skip=2)  # not seen by the stream yet
    (landing / "notes.txt").write_text("not a photo")  # neither is waiting: the source's rules
    _photo(landing, ".partial.jpg", skip=3)
    time.sleep(1.5)
    code, shown, result = _check(capsys)
    assert code == 1
    assert _failed(result) == ["stream_behind", "stream_stalled"]
    assert "FAIL stream_behind: 2 photos wait, the oldest for" in shown
    assert "(limit 1 s)" in shown
    assert "FAIL stream_stalled: 2 photos wait and no batch committed for" in shown
    assert "ok   unknown_share: no judgement" in shown and shown.endswith("2 rule(s) failed")


def test_a_batch_spark_committed_before_the_source_heard_of_it_does_not_wait(
    make_config: MakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    # A running stream: Spark wrote batch 0's commit, and tells the source only when it plans
    # batch 1, so the discovery state still has both photos pending.
    config = _config(make_config, tmp_path, monkeypatch)
    landing = Path(config.path("landing"))
    store = FolderStore(str(landing))
    checkpoint = Path(checkpoint_path(config))
    state = DiscoveryState.open(checkpoint / "discovery" / "state.sqlite", max_file_age_s=86400)
    for name, skip in (("a.jpg", 0), ("b.jpg", 1)):
        _photo(landing, name, skip=skip)
        state.add([_info(store, name)])
    state.save()
    _, shown, _ = _check(capsys)
    assert "ok   stream_behind: 2 photos wait" in shown
    # Spark's logs, as the source itself reads them (its _sync_commits): "v1", the batch's
    # metadata, then the source's end offset.
    for log in ("offsets", "commits"):
        (checkpoint / log).mkdir()
    (checkpoint / "offsets" / "0").write_text('v1\n{"batchWatermarkMs":0}\n{"seq":2}')
    (checkpoint / "commits" / "0").write_text('v1\n{"nextBatchWatermarkMs":0}')
    _, shown, _ = _check(capsys)
    assert "ok   stream_behind: no photo waits" in shown
    assert state.pending() != []  # the state itself was not touched
    state.close()


def test_a_healthy_stream_passes_after_a_real_run_and_a_new_photo_then_waits(
    trained: tuple[Config, dict[str, Any]],
    make_config: MakeConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    copy_registry(trained[0], tmp_path)
    config = _config(
        make_config,
        tmp_path,
        monkeypatch,
        FRUITS__HEALTH__MAX_UPLOAD_WAIT_S="2",
        FRUITS__HEALTH__MIN_PHOTOS="2",  # the shares are judged on these few photos
        FRUITS__HEALTH__MAX_UNKNOWN_SHARE="0.5",
        FRUITS__HEALTH__MAX_QUARANTINE_SHARE="0.25",
    )
    landing = Path(config.path("landing"))
    landing.mkdir(parents=True)
    for label in KNOWN_CLASSES:
        shutil.copy(real_photos("Test", label, 1)[0], landing / f"{label}.jpg")
    truncated = real_photos("Test", "Kiwi", 1, skip=4)[0].read_bytes()
    (landing / "broken.jpg").write_bytes(truncated[: len(truncated) // 2])
    assert run_stream(config, once=True)["rows_in"] == 5
    time.sleep(2.5)  # longer than max_upload_wait_s: nothing may count as waiting

    code, shown, result = _check(capsys)
    assert (code, _failed(result)) == (0, []), shown
    assert all(f["evaluated"] for f in result["findings"])
    assert "ok   stream_behind: no photo waits" in shown and shown.endswith("healthy")
    assert "ok   quarantine_share: 1 of 5 photos quarantined in the last 1 hour (20%; " in shown
    assert "limit 25%): truncated 1" in shown

    _photo(landing, "late.jpg", skip=6)  # after the run: waits for the next one
    time.sleep(2.5)
    code, shown, result = _check(capsys, "--json")
    assert code == 1 and _failed(result) == ["stream_behind"]
    assert shown == ""  # --json: the JSON line only
    behind = result["findings"][0]
    assert behind["message"].startswith("1 photo wait, the oldest for")


def test_an_unknown_share_of_half_fails(
    make_config: MakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    config = _config(make_config, tmp_path, monkeypatch)
    lake = open_lake(config)
    lake.append_arrow(_predictions(10, unknown=5), PREDICTIONS)
    code, shown, result = _check(capsys)
    assert (code, _failed(result)) == (0, [])  # 10 photos < min_photos 20: no judgement
    assert "ok   unknown_share: no judgement: 10 photos in the last 1 hour, fewer than 20" in shown

    lake.append_arrow(_predictions(10, unknown=5), PREDICTIONS)
    # Two hours old, outside the window: unknown answers there do not count.
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    lake.append_arrow(_predictions(30, unknown=30, at=old), PREDICTIONS)
    code, shown, result = _check(capsys)
    assert code == 1 and _failed(result) == ["unknown_share"]
    assert "FAIL unknown_share: 10 of 20 answers unknown in the last 1 hour (50%; limit 25%" in (
        shown
    )


def test_an_unknown_share_several_times_last_weeks_fails(
    make_config: MakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    config = _config(make_config, tmp_path, monkeypatch)
    lake = open_lake(config)
    now = dt.datetime.now(dt.UTC)
    # The week before: 2% unknown over 250 photos, spread over three days.
    for days, n in ((1, 100), (3, 100), (6, 50)):
        lake.append_arrow(
            _predictions(n, unknown=n // 50, at=now - dt.timedelta(days=days)), PREDICTIONS
        )
    lake.append_arrow(_predictions(40, unknown=2), PREDICTIONS)  # 5%: under 3 x 2%
    code, shown, result = _check(capsys)
    assert (code, _failed(result)) == (0, []), shown
    assert "or 3 x the 7 days before's 2.0% = 6.0%" in shown

    lake.append_arrow(_predictions(40, unknown=6), PREDICTIONS)  # 8 of 80: 10%, under 25%
    code, shown, result = _check(capsys)
    assert code == 1 and _failed(result) == ["unknown_share"]
    assert "FAIL unknown_share: 8 of 80 answers unknown" in shown and "(10%; limit 25%" in shown


def test_a_quarantine_spike_fails(
    make_config: MakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    config = _config(make_config, tmp_path, monkeypatch)
    lake = open_lake(config)
    lake.append_arrow(_predictions(27), PREDICTIONS)
    lake.append_arrow(_quarantined(2, "truncated"), QUARANTINE)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    lake.append_arrow(_quarantined(50, "not_an_image", at=old), QUARANTINE)  # outside the window
    code, shown, result = _check(capsys)
    assert (code, _failed(result)) == (0, []), shown  # 2 of 29: 7%
    lake.append_arrow(_quarantined(6, "too_large_bytes"), QUARANTINE)
    code, shown, result = _check(capsys)
    assert code == 1 and _failed(result) == ["quarantine_share"]
    assert (
        "FAIL quarantine_share: 8 of 35 photos quarantined in the last 1 hour (23%; limit 10%): "
        "too_large_bytes 6, truncated 2"
    ) in shown


def test_thresholds_come_from_the_config(
    make_config: MakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    config = _config(make_config, tmp_path, monkeypatch, FRUITS__HEALTH__MAX_QUARANTINE_SHARE="0.3")
    lake = open_lake(config)
    lake.append_arrow(_predictions(27), PREDICTIONS)
    lake.append_arrow(_quarantined(8, "truncated"), QUARANTINE)
    code, shown, _ = _check(capsys)
    assert code == 0 and "(23%; limit 30%)" in shown
    monkeypatch.setenv("FRUITS__HEALTH__WINDOW", "one hour")
    assert main(["status", "--check", "--config", str(PROJECT / "conf" / "local.yaml")]) == 2
    assert "config key 'health.window'" in capsys.readouterr().err


def test_with_auto_loader_the_stream_rules_say_they_are_not_evaluated(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(tmp_path, FRUITS__STREAM__AUTOLOADER="true")
    _photo(Path(config.path("landing")), "waiting.jpg")  # never listed: not this source's
    findings = {f.rule: f for f in check_health(config)}
    for rule in ("stream_behind", "stream_stalled"):
        assert findings[rule].ok and not findings[rule].evaluated
        assert "not evaluated with Auto Loader" in findings[rule].message
    assert findings["unknown_share"].evaluated


def test_an_unreadable_table_means_the_check_could_not_run(
    make_config: MakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    config = _config(make_config, tmp_path, monkeypatch)
    open_lake(config).append_arrow(_predictions(3), PREDICTIONS)
    log = Path(config.table_path(PREDICTIONS)) / "_delta_log" / "00000000000000000000.json"
    log.write_text("{not json")
    code = main(["status", "--check", "--config", str(PROJECT / "conf" / "local.yaml")])
    assert code == 2
    assert "fruits: error: could not check" in capsys.readouterr().err


def test_answers_unlike_validation_fail_drift(
    trained: tuple[Config, dict[str, Any]],
    make_config: MakeConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    from fruits.model.registry import ModelRegistry
    from fruits.observe.drift import AnswerDistribution

    source, summary = trained
    copy_registry(source, tmp_path)
    config = _config(make_config, tmp_path, monkeypatch)
    version = summary["model_version"]
    report = ModelRegistry(config).training_report(version)
    assert report is not None
    reference = AnswerDistribution.from_dict(report["validation"]["answers"])
    lake = open_lake(config)
    # Confident answers, as on validation (whose answers are mostly in the top bin): no drift.
    at = dt.datetime.now(dt.UTC)
    confident = _served(_predictions(40, at=at), version, 0.99)
    lake.append_arrow(confident, PREDICTIONS)
    code, shown, result = _check(capsys)
    assert reference.confidence[-1] > 0.6, reference  # the premise: validation is confident
    assert (code, _failed(result)) == (0, []), shown
    assert f"ok   drift: model version {version}, 40 answers" in shown

    # The same model, now unsure of everything it answers (none "unknown": unknown_share holds).
    lake.append_arrow(_served(_predictions(80, at=at), version, 0.45), PREDICTIONS)
    code, shown, result = _check(capsys)
    assert code == 1 and _failed(result) == ["drift"], shown
    assert "FAIL drift: model version" in shown and "(limit 0.30)" in shown


def _served(rows: pa.Table, version: int, confidence: float) -> pa.Table:
    """``rows`` answered by ``version`` with this top probability."""
    for name, value in (("confidence", confidence), ("model_version", version)):
        index = rows.schema.get_field_index(name)
        rows = rows.set_column(index, name, pa.array([value] * rows.num_rows))
    return rows
