"""``fruits dashboard`` on a real lake: Delta rows written with the project's Lake API naming
real photos in a landing folder, a real MLflow registry, the real server over HTTP, and the
page in headless Chromium (scripts/chromium.sh installs it) driven by Selenium."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from fruits.config import Config, load_config
from fruits.errors import ConfigError
from fruits.model.registry import ModelRegistry
from fruits.observe.dashboard import background_dashboard, collect_dashboard
from fruits.sinks.delta import open_lake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE, SCHEMAS

from .bad_inputs import heif
from .conftest import PROJECT, real_photos

# What the test reads of the page, in one script run (between two refreshes).
_SNAPSHOT = """
const all = (q) => [...document.querySelectorAll(q)];
const text = (q) => all(q).map((e) => e.innerText).join("\\n");
return {
  bars: all("#plot-photos svg rect.point").map((r) => Number(r.getAttribute("height"))),
  p50: all("#plot-latency svg circle.point.p50").length,
  p95: all("#plot-latency svg circle.point.p95").length,
  unknown: all("#plot-unknown svg circle.point").length,
  cards: all("#photos figure").map((f) => ({
    label: f.querySelector(".label").textContent,
    meta: f.querySelector(".meta").textContent,
    src: f.querySelector("img").getAttribute("src"),
    width: f.querySelector("img").naturalWidth,
  })),
  reasons: text("#reasons"),
  quarantined: text("#quarantined"),
  segments: all("#timeline rect.segment").map((r) => r.getAttribute("data-version")),
  champion: text("#registry tr.champion"),
  tile: text("#tile-champion"),
  status: document.getElementById("status").className,
  drift: text("#drift-figures"),
  driftBars: all("#drift svg rect.point").length,
};
"""
CHROMIUM = os.environ.get("FRUITS_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get(
    "FRUITS_CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver"
)
SCREENSHOT = PROJECT / "docs" / "dashboard.png"
NOW = dt.datetime.now(dt.UTC)


def _prediction(path: str, label: str, minutes_ago: float, version: int, **extra: Any) -> dict:
    at = NOW - dt.timedelta(minutes=minutes_ago)
    latency = extra.pop("latency_ms", 400.0)
    return {
        "image_id": f"{abs(hash((path, minutes_ago))):064x}"[:64],
        "path": path,
        "label": label,
        "confidence": extra.pop("confidence", 0.93),
        "top_k": [{"label": label, "prob": 0.93}],
        "is_unknown": extra.pop("is_unknown", False),
        "model_version": version,
        "uploaded_at": at - dt.timedelta(milliseconds=latency),
        "discovered_at": at,
        "predicted_at": at,
        "latency_ms": latency,
        "batch_id": extra.pop("batch_id", 0),
        "kind": label.lower(),
        "kind_confidence": 0.95,
        "variety_not_sure": extra.pop("variety_not_sure", False),
    }


def _quarantined(path: str, reason: str, minutes_ago: float) -> dict:
    at = NOW - dt.timedelta(minutes=minutes_ago)
    return {
        "path": path,
        "image_id": None,
        "reason": reason,
        "detail": f"{reason} upload",
        "size_bytes": 12,
        "uploaded_at": at,
        "detected_at": at,
        "batch_id": 9,
    }


@dataclasses.dataclass
class Lake:
    config: Config
    photos: dict[str, str]  # what -> URL in the tables


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory, make_config: Callable[..., Config]) -> Lake:
    """Predictions of real photos by v1 then v2 (a promotion), a rollback to v1 an hour ago
    and v2 again for the newest photos; quarantine rows; a registry with both versions."""
    config = make_config(tmp_path_factory.mktemp("dashboard"))
    landing, archive = Path(config.path("landing")), Path(config.path("archive"))
    (landing / "phone").mkdir(parents=True)
    archive.mkdir(parents=True)
    photos: dict[str, str] = {}
    for label in ("Banana", "Kiwi", "Strawberry"):
        source = real_photos("Test", label, 1)[0]
        shutil.copy(source, landing / f"{label}.jpg")
        photos[label] = f"file:{landing}/{label}.jpg"
    # An iPhone's HEIC, in a sub-folder, decoded by the project's decoder for its thumbnail.
    kiwi = Image.open(real_photos("Test", "Kiwi", 2)[1]).convert("RGB")
    (landing / "phone" / "IMG_0001.HEIC").write_bytes(heif(kiwi))
    photos["heic"] = f"file:{landing}/phone/IMG_0001.HEIC"
    # Archived by stream.clean_source: the row keeps its landing URL.
    shutil.copy(real_photos("Test", "Pineapple", 1)[0], archive / "Pineapple.jpg")
    photos["archived"] = f"file:{landing}/Pineapple.jpg"
    photos["deleted"] = f"file:{landing}/deleted.jpg"  # cleaned up with clean_source: delete
    rows = [
        # older answers, spread over two hours: v1, promoted to v2, rolled back to v1
        *(
            _prediction(photos["Kiwi"], "Kiwi", 150 - 5 * i, 1, latency_ms=300.0 + i)
            for i in range(10)
        ),
        *(
            _prediction(photos["Kiwi"], "Kiwi", 90 - 5 * i, 2, latency_ms=600.0 + i)
            for i in range(6)
        ),
        *(
            _prediction(photos["Kiwi"], "Kiwi", 55 - 5 * i, 1, is_unknown=i % 2 == 0)
            for i in range(6)
        ),
        # the newest, served by v2 again
        _prediction(photos["archived"], "Pineapple", 6, 2),
        _prediction(photos["deleted"], "Kiwi", 5, 2),
        _prediction(photos["heic"], "Kiwi", 4, 2, variety_not_sure=True),
        _prediction(photos["Strawberry"], "Strawberry", 3, 2, is_unknown=True, confidence=0.41),
        _prediction(photos["Kiwi"], "Kiwi", 2, 2),
        _prediction(photos["Banana"], "Banana", 1, 2, confidence=0.98),
    ]
    bad = [
        _quarantined(f"file:{landing}/half.jpg", "truncated", 20),
        _quarantined(f"file:{landing}/notes.pdf.jpg", "not_an_image", 10),
        _quarantined(f"file:{landing}/half2.jpg", "truncated", 8),
    ]
    delta = open_lake(config)
    delta.append_arrow(pa.Table.from_pylist(rows[:22], schema=SCHEMAS[PREDICTIONS]), PREDICTIONS)
    delta.append_arrow(pa.Table.from_pylist(rows[22:], schema=SCHEMAS[PREDICTIONS]), PREDICTIONS)
    delta.append_arrow(pa.Table.from_pylist(bad, schema=SCHEMAS[QUARANTINE]), QUARANTINE)
    _register_versions(config, 2, champion=2)
    return Lake(config, photos)


# A training report's validation answers: confident, half bananas, half strawberries.
_REPORT = {
    "validation": {
        "n_images": 40,
        "answers": {
            "n": 40,
            "answers": {"Banana": 0.5, "Strawberry": 0.5},
            "confidence": [0.0] * 9 + [1.0],
        },
    }
}


def _register_versions(config: Config, n: int, *, champion: int) -> None:
    """``n`` versions and the ``champion`` alias in the root's real MLflow store, through
    MLflow's client: the dashboard reads versions and aliases, never a model's files."""
    from mlflow import MlflowClient

    # Both URIs named: an earlier test may have set the process-wide registry URI.
    uri = config.mlflow_uri("tracking_uri")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(config.mlflow.model_name)
    experiment = client.create_experiment(
        "dashboard", artifact_location=str(Path(config.root) / "mlartifacts")
    )
    for i in range(n):
        # Each version's training run holds its report, with the validation answers that
        # the drift panel compares the live ones with (as batch/train.py writes them).
        run = client.create_run(experiment)
        client.log_text(run.info.run_id, json.dumps(_REPORT), "report/metrics.json")
        client.create_model_version(
            config.mlflow.model_name,
            source=str(Path(config.root) / "models" / str(i)),
            run_id=run.info.run_id,
            tags={"classifier": "logistic_regression", "accuracy_test": f"0.9{i}"},
        )
    client.set_registered_model_alias(config.mlflow.model_name, "champion", str(champion))


def _written(config: Config) -> tuple[Any, ...]:
    """Everything the dashboard must leave as it is: both tables' Delta versions, the
    registry's versions and aliases."""
    lake = open_lake(config)
    registry = ModelRegistry(config)
    return (
        lake.version(PREDICTIONS),
        lake.version(QUARANTINE),
        [(v.version, v.aliases) for v in registry.versions()],
    )


def _get(url: str) -> tuple[bytes, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read(), response.headers


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).is_file():
            pytest.fail(f"{binary} not found: run scripts/chromium.sh (make browser)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    # The driver named explicitly: Selenium Manager would try to download one (offline here).
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    # The page's own size, whatever the window's decorations take: the docs' screenshot.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_shows_plots_photos_models_and_quarantine(lake: Lake, browser: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    before = _written(lake.config)
    # refreshing every second, so the test sees the page ask again soon
    quick = dataclasses.replace(
        lake.config, dashboard=dataclasses.replace(lake.config.dashboard, refresh_s=1.0)
    )
    with background_dashboard(quick) as url:
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: d.execute_script("return document.body.dataset.updated"))
        # the thumbnails are fetched after the JSON: wait for every one to be decoded
        wait.until(
            lambda d: d.execute_script(
                "const i = [...document.querySelectorAll('#photos img')];"
                "return i.length > 0 && i.every(x => x.complete);"
            )
        )
        # One snapshot in the page itself: it re-renders at every refresh.
        seen = browser.execute_script(_SNAPSHOT)
        # 28 photos in buckets of 2 minutes (3 h window): one bar and one point per bucket
        # used; 22 photos 5 minutes apart, then 6 a minute apart (3 or 4 buckets)
        assert 25 <= len(seen["bars"]) <= 26
        assert seen["p50"] == seen["p95"] == seen["unknown"] == len(seen["bars"])
        assert min(seen["bars"]) > 0
        cards = seen["cards"]
        by_path = {urllib.parse.unquote(c["src"].split("path=")[1]): c for c in cards}
        assert cards[0]["label"] == "Banana"  # newest first
        assert by_path[lake.photos["Banana"]]["width"] == 160  # the JPEG thumbnail, decoded
        assert "confidence 0.98" in by_path[lake.photos["Banana"]]["meta"]
        assert "v2" in by_path[lake.photos["Banana"]]["meta"]
        assert by_path[lake.photos["Strawberry"]]["label"] == "unknown (best guess Strawberry)"
        assert by_path[lake.photos["heic"]]["label"] == "a kiwi, variety not sure (best guess Kiwi)"
        for what in ("heic", "archived", "deleted"):  # deleted: the placeholder, not a broken img
            assert by_path[lake.photos[what]]["width"] == 160, what
        assert "truncated\t2" in seen["reasons"] and "not_an_image\t1" in seen["reasons"]
        assert "notes.pdf.jpg" in seen["quarantined"]
        assert seen["segments"] == ["1", "2", "1", "2"]  # promoted, rolled back, promoted again
        assert seen["champion"].startswith("v2") and "champion" in seen["champion"]
        assert seen["tile"].startswith("v2")
        assert "error" not in seen["status"]
        # The serving version's last hour against its validation answers, both histograms.
        assert (
            seen["drift"].startswith("model v2, ") and "against 40 on validation" in seen["drift"]
        )
        assert "confidence distance" in seen["drift"] and seen["driftBars"] == 20
        # it refreshes by itself: the page asks again after dashboard.refresh_s
        first = browser.execute_script("return document.body.dataset.updated")
        wait.until(lambda d: d.execute_script("return document.body.dataset.updated") != first)
        browser.execute_script("window.scrollTo(0, 0)")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOT))
    assert _written(lake.config) == before
    with Image.open(SCREENSHOT) as shot:
        assert shot.size == (1280, 900)


def test_thumbnails_come_from_the_landing_or_the_archive_and_nothing_else(lake: Lake) -> None:
    before = _written(lake.config)
    landing = Path(lake.config.path("landing"))
    outside = Path(lake.config.root) / "secret.jpg"
    shutil.copy(real_photos("Test", "Banana", 1)[0], outside)
    link = landing / "link.jpg"
    link.symlink_to(outside)
    try:
        with background_dashboard(lake.config) as url:

            def thumbnail(path: str) -> tuple[bytes, Any]:
                return _get(f"{url}thumbnail?path={urllib.parse.quote(path, safe='')}")

            for what in ("Banana", "heic", "archived"):
                body, headers = thumbnail(lake.photos[what])
                assert headers["Content-Type"] == "image/jpeg", what
                assert Image.open(io.BytesIO(body)).size == (160, 160)
            body, headers = thumbnail(lake.photos["deleted"])
            assert headers["Content-Type"] == "image/svg+xml"
            assert headers["X-Fruits-Placeholder"].startswith("gone")
            for refused in (
                f"file:{outside}",
                "file:/etc/passwd",
                f"file:{landing}/../secret.jpg",
                f"file:{landing}//etc/passwd",
                f"file:{link}",
                "az://landing/photos/x.jpg",
                "",
            ):
                body, headers = thumbnail(refused)
                assert headers["Content-Type"] == "image/svg+xml", refused
                assert headers["X-Fruits-Placeholder"].startswith("refused"), refused
                assert b"JFIF" not in body
            # the page's own files, and nothing else of the package or the machine
            assert b"refresh" in _get(f"{url}static/dashboard.js")[0]
            with pytest.raises(urllib.error.HTTPError) as missing:
                _get(f"{url}static/..%2Fdashboard.py")
            assert missing.value.code == 404
    finally:
        link.unlink()
    assert _written(lake.config) == before


def test_figures_per_bucket(lake: Lake) -> None:
    payload = collect_dashboard(lake.config, window=dt.timedelta(hours=3), now=NOW)
    series = payload["series"]
    assert payload["window"]["bucket_s"] == 120  # 3 h in about 120 buckets of whole minutes
    assert len(series["start"]) == 90
    assert sum(series["photos"]) == payload["summary"]["photos"] == 28
    assert np.allclose(
        [c / 2 for c in series["photos"]], [v or 0 for v in series["photos_per_minute"]]
    )
    # the v2 stretch (600..605 ms) is in the buckets 60..90 minutes ago, alone per bucket
    for i in range(6):
        when = NOW - dt.timedelta(minutes=90 - 5 * i)
        bucket = int((when - (NOW - dt.timedelta(hours=3))).total_seconds() // 120)
        assert series["latency_p50_ms"][bucket] == series["latency_p95_ms"][bucket] == 600.0 + i
    shares = series["unknown_share"]
    assert [s is None for s in shares] == [c == 0 for c in series["photos"]]
    assert sum(s * c for s, c in zip(shares, series["photos"], strict=True) if c) == 4
    assert max(s for s in shares if s is not None) == 1.0  # the v1 stretch's unknown ones
    assert payload["summary"]["unknown"] == 4 and payload["summary"]["unknown_share"] == 4 / 28
    assert sum(series["quarantined"]) == 3
    assert payload["quarantine"]["reasons"] == {"truncated": 2, "not_an_image": 1}
    assert [r["reason"] for r in payload["quarantine"]["newest"]] == [
        "truncated",
        "not_an_image",
        "truncated",
    ]
    models = payload["models"]
    assert [s["version"] for s in models["segments"]] == [1, 2, 1, 2]
    assert [s["photos"] for s in models["segments"]] == [10, 6, 6, 6]
    assert {s["version"]: s["photos"] for s in models["served"]} == {1: 16, 2: 12}
    assert [v["version"] for v in models["registry"]] == [1, 2]
    assert models["registry"][1]["aliases"] == ["champion"] and models["champion"] == 2
    assert [p["label"] for p in payload["photos"][:2]] == ["Banana", "Kiwi"]
    # a narrow window reads only the newest file: Delta statistics skip the older one
    narrow = collect_dashboard(lake.config, window=dt.timedelta(minutes=10), now=NOW)
    assert narrow["read"]["predictions_files"] == 1
    assert narrow["summary"]["photos"] == 6
    assert narrow["window"]["bucket_s"] == 60


def test_an_empty_root_answers_an_empty_page(make_config: Callable[..., Config]) -> None:
    config = make_config()
    payload = collect_dashboard(config)
    assert payload["summary"]["photos"] == 0 and payload["photos"] == []
    assert payload["models"] == {"champion": None, "segments": [], "served": [], "registry": []}
    assert set(payload["series"]["latency_p50_ms"]) == {None}
    # and reading created nothing: no table, no registry
    assert not Path(config.path("lake")).exists() and not (Path(config.root) / "mlflow.db").exists()


def test_fruits_dashboard_command_logs_its_url_and_stops_on_ctrl_c(lake: Lake) -> None:
    env = {
        **os.environ,
        "FRUITS_ROOT": lake.config.root,
        "FRUITS_WEIGHTS": lake.config.featurizer.weights,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "fruits.cli", "dashboard", "--port", "0"],
        env=env,
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as in a terminal, even when the suite runs where SIGINT is ignored (a shell's
        # background job), which the child would inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stderr is not None
        line = ""
        deadline = time.monotonic() + 60
        while "dashboard on" not in line and time.monotonic() < deadline:
            line = process.stderr.readline()
        url = line.split("dashboard on ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")  # this machine only, by default
        body, _ = _get(f"{url}api/dashboard")
        assert b'"photos"' in body
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("PORT", "0", "dashboard.port"),
        ("PORT", "70000", "dashboard.port"),
        ("WINDOW_HOURS", "0", "dashboard.window_hours"),
        ("REFRESH_S", "0.1", "dashboard.refresh_s"),
        ("HOST", "'a host; rm'", "dashboard.host"),
    ],
)
def test_dashboard_settings_are_validated(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("local", environ={f"FRUITS__DASHBOARD__{key}": value})
