"""The benchmark harness's parts that decide its figures, on real photos (the full runs are
benchmarks, not tests: ``fruits bench ...``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench._harness import (
    TreeMemory,
    bench_config,
    cpu_spent,
    pick_photos,
    spark_cores,
    tree_cpu_seconds,
    tree_rss_mb,
)
from bench.discovery import run_discovery
from bench.throughput import bare_throughput, batch_figures
from fruits.config import Config
from fruits.features.featurizer import ExtractorSpec
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.tables import FEATURES

from .conftest import FRUITS360, with_backend


def test_bare_featurizer_runs_in_parallel_processes_on_real_photos(
    make_config: Callable[..., Config],
) -> None:
    spec = ExtractorSpec.from_config(with_backend(make_config(), "onnx"))
    blobs = [p.read_bytes() for p in pick_photos(FRUITS360 / "Test", 8)]
    seconds = bare_throughput(blobs, spec, processes=2, batch=2)
    assert 0 < seconds < 60


def test_batch_figures_time_the_training_jobs_featurization_on_the_same_photos(
    spark: object, make_config: Callable[..., Config], tmp_path: Path
) -> None:
    photos = pick_photos(FRUITS360 / "Test", 8)
    figures = batch_figures(
        make_config(tmp_path / "root"), photos, tmp_path, stream_photos_per_s=50
    )
    assert figures["batch_photos_per_s"] > 0 and figures["batch_seconds"] > 0
    ratio = figures["batch_photos_per_s"] / 50
    assert abs(figures["batch_to_stream_ratio"] - ratio) < 0.01
    assert figures["batch_chunk_size"] == 512 and "featurize_labelled" in figures["batch_scope"]
    # Every photo went through the batch path, from its class folder: one feature row each.
    rows = DeltaRsLake(str(tmp_path / "lake")).read_arrow(FEATURES, columns=["path", "label"])
    assert sorted((r["label"], Path(r["path"]).name) for r in rows.to_pylist()) == sorted(
        (p.parent.name, p.name) for p in photos
    )


def test_photos_are_spread_over_all_classes() -> None:
    photos = pick_photos(FRUITS360 / "Test", 20)
    assert len(photos) == len(set(photos)) == 20
    assert len({p.parent.name for p in photos}) >= 15


def test_tree_memory_counts_child_processes() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; b = bytearray(200 * 2**20); time.sleep(3)"]
    )
    try:
        with TreeMemory(interval_s=0.05) as memory:
            while tree_rss_mb(child.pid) < 200:
                pass
        # The child's 200 MB and this process (whose Spark JVM may grow meanwhile: no upper
        # bound from a later sample of the whole tree).
        assert memory.peak_mb > tree_rss_mb(child.pid) >= 200
        assert 200 <= memory.peak_pss_mb <= memory.peak_mb
    finally:
        child.kill()
        child.wait()


def test_cpu_spent_counts_the_cpu_a_child_used_between_two_snapshots() -> None:
    burn = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\n"
    child = subprocess.Popen([sys.executable, "-c", burn + "time.sleep(30)"])
    try:
        before = tree_cpu_seconds()
        while sum(s for (pid, _), s in tree_cpu_seconds().items() if pid == child.pid) < 0.5:
            time.sleep(0.05)
        after = tree_cpu_seconds()
        (name,) = {name for pid, name in after if pid == child.pid}
        assert 0.3 <= cpu_spent(before, after)[name] < 5
    finally:
        child.kill()
        child.wait()


def test_spark_cores_of_local_masters() -> None:
    assert spark_cores("local[3]") == 3
    assert spark_cores("local[*]") == os.cpu_count()
    assert spark_cores("local") == 1


def test_bench_root_keeps_the_configured_onnx_cache(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = make_config()
    bench = bench_config(config, tmp_path, backend="keras", image_size=150)
    assert bench.root == str(tmp_path)
    assert (bench.featurizer.backend, bench.featurizer.image_size) == ("keras", 150)
    assert bench.featurizer.onnx_dir == str(Path(config.featurizer.onnx_dir or "").resolve())


def test_discovery_listing_reads_the_whole_container_notification_only_new_files() -> None:
    result = run_discovery(sizes=[100, 6000], new_files=3, triggers=2)
    small, large = result["sizes"]
    assert (small["files"], large["files"]) == (100, 6000)
    assert (small["blob_list_pages_per_trigger"], large["blob_list_pages_per_trigger"]) == (1, 2)
    assert result["cores"] == os.cpu_count()


def test_soak_trends_are_relative_growth_after_the_warm_up() -> None:
    from bench.soak import trend

    hours = [i * 360.0 for i in range(11)]  # one hour, every 6 minutes
    flat = trend(hours, [1000.0 + (5 if i % 2 else -5) for i in range(11)])
    assert flat is not None and abs(flat["growth"]) < 0.01
    leaking = trend(hours, [1000.0 + 20 * i for i in range(11)])  # +200 MB an hour
    assert leaking is not None
    assert leaking["growth"] == pytest.approx(0.2) and leaking["slope_per_hour"] == pytest.approx(
        200
    )
    assert trend(hours[:2], [1.0, 2.0]) is None  # too few samples for a line
