"""``fruits bench throughput``: photos per second of the bare featurizer and of the full
streaming job, measured one after the other in one process run on the same photos.

(a) bare: decode + preprocess + model on Arrow-sized batches, no Spark, in as many processes as
    Spark has task slots, one inference thread each (what ``local[N]`` does);
(b) stream: ``fruits stream --once`` on a fresh root whose registry holds a trained model;
(c) floor: the same stream over N files of the same sizes that are not photos (quarantined at
    the header, no inference): what Spark costs per micro-batch whatever the featurizer, which
    bounds the ratio (``ratio_bound``);
(d) batch: the training job's featurization (``featurize_labelled``, what ``fruits train`` and
    ``fruits evaluate`` run) on the same N photos in a ``<Class>/`` tree, a fresh features
    table, in the same SparkSession (``batch_photos_per_s``, ``batch_to_stream_ratio``).

Warm-up is excluded from both: (a) each process featurizes one batch before the clock starts
(model load); (b) three ``--once`` passes over a few other photos start Spark's Python workers,
load their models and let the JVM compile its hot code (a first pass alone leaves the timed
pass paying for JIT compilation: BENCHMARKS.md, section 4), then the timed pass runs on the
N photos in the same SparkSession; (d) one batch pass over the warm-up photos first.
The ratio stream / bare is what Spark, Delta and the model cost on top of the featurizer.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from bench._harness import (
    TreeMemory,
    bench_config,
    cpu_spent,
    drop_photos,
    machine,
    pick_photos,
    prepare_model,
    spark_cores,
    tree_cpu_seconds,
)
from fruits.config import Config
from fruits.console import log
from fruits.features.featurizer import Backend, ExtractorSpec, featurize_frame, prepare_backend
from fruits.features.inception import FULL_NETWORK

__all__ = ["bare_throughput", "batch_figures", "run_sizes", "run_throughput"]

_WARM_UP_PASSES = 3


def run_throughput(
    config: Config,
    *,
    images: str,
    n: int,
    backend: Backend | None = None,
    image_size: int | None = None,
    layer: str | None = None,
    models: str | None = None,
    baseline: bool = False,
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="fruits-bench-throughput-"))
    config = bench_config(config, root, backend=backend, image_size=image_size, layer=layer)
    slots = spark_cores(config.spark.master)
    batch = config.spark.arrow_batch_size
    # Enough photos for at least one task per slot, so every Python worker has loaded its
    # model before the timed pass.
    warm_n = 64 * slots
    photos = pick_photos(images, _WARM_UP_PASSES * warm_n + n)
    # Both sets spread over all classes: every k-th photo is timed, the others warm up.
    chosen = {round(i * len(photos) / n) for i in range(n)}
    timed = [p for i, p in enumerate(photos) if i in chosen]
    warm_up = [p for i, p in enumerate(photos) if i not in chosen]
    spec = ExtractorSpec.from_config(config)
    prepare_backend(spec)  # the ONNX export, if needed, is not part of either figure

    blobs = [p.read_bytes() for p in timed]
    log(f"bench: (a) bare featurizer on {n} photos, {slots} processes x 1 thread, batch {batch}")
    bare_s = bare_throughput(blobs, spec, processes=slots, batch=batch)
    baseline_figures: dict[str, Any] = {}
    if baseline:
        # The same bare run for the baseline, right after: a speed-up measured side by side,
        # which a loaded machine distorts far less than two separate runs.
        # The baseline: Keras, 299 pixels, the whole network (InceptionV3 as published).
        reference = ExtractorSpec.from_config(config, image_size=299, layer=FULL_NETWORK)
        reference = dataclasses.replace(reference, backend="keras")
        log("bench: (a') bare featurizer, baseline keras at 299, whole network")
        reference_s = bare_throughput(blobs, reference, processes=slots, batch=batch)
        baseline_figures = {
            "baseline": f"keras/299/{FULL_NETWORK}",
            "baseline_bare_photos_per_s": round(n / reference_s, 2),
            "bare_speedup_vs_baseline": round(reference_s / bare_s, 2),
        }

    log(f"bench: (b) fruits stream --once on the same {n} photos, fresh root {root}")
    from streaming.job import run_stream

    model_from = prepare_model(config, images=images, models=models)
    with TreeMemory() as memory:
        landing = Path(config.path("landing"))
        for start in range(0, len(warm_up), warm_n):
            # Warm-up: Spark's Python workers load the model, the JVM compiles its hot code.
            drop_photos(warm_up[start : start + warm_n], landing)
            run_stream(config, once=True)
        drop_photos(timed, landing)
        cpu_before = tree_cpu_seconds()
        started = time.perf_counter()
        summary = run_stream(config, once=True)
        wall_s = time.perf_counter() - started
        stream_cpu = cpu_spent(cpu_before, tree_cpu_seconds())
        floor = _stream_floor(config, timed, root / "not-photos")
    if summary["predictions"] != n:
        raise RuntimeError(f"the stream predicted {summary['predictions']} of {n} photos")
    if floor["quarantined"] != n:
        raise RuntimeError(f"the floor pass quarantined {floor['quarantined']} of {n} files")

    bare = n / bare_s
    stream_s = summary["busy_seconds"]
    streamed = n / stream_s
    log(f"bench: (d) the batch job's featurization on the same {n} photos")
    batch_figures(config, warm_up, root / "batch-warm-up")  # the JVM's batch read path
    batch_run = batch_figures(config, timed, root / "batch", stream_photos_per_s=streamed)
    return {
        "backend": spec.backend,
        "image_size": spec.image_size,
        "layer": spec.layer,
        "n": n,
        "bare_photos_per_s": round(bare, 2),
        "stream_photos_per_s": round(streamed, 2),
        "ratio": round(streamed / bare, 3),
        "bare_seconds": round(bare_s, 2),
        "stream_seconds": round(stream_s, 2),
        "stream_seconds_scope": "Spark's triggerExecution of the batches: listing, featurize, "
        "classify, Delta commits, offset and commit logs",
        "stream_phases_ms": summary["busy_phases_ms"],
        "stream_floor_seconds": floor["busy_seconds"],
        "stream_floor_phases_ms": floor["busy_phases_ms"],
        "stream_floor_scope": "the same stream over N files of the photos' sizes that are not "
        "photos: listed, read, hashed, shipped to the workers and quarantined like photos, "
        "rejected at the header (no inference). What Spark costs whatever the featurizer",
        "ratio_bound": round(bare_s / (bare_s + floor["busy_seconds"]), 3),
        "ratio_bound_scope": "bare / (bare + floor): the ratio if the featurizer ran at its "
        "bare speed inside the stream and only the floor came on top",
        "stream_wall_seconds": round(wall_s, 2),
        "stream_cpu_seconds": stream_cpu,
        "stream_cpu_scope": "CPU seconds of the timed --once run by process: fruits = the "
        "driver's Python, java = Spark's JVM, python3 = Spark's Python workers",
        **batch_run,
        "stream_wall_photos_per_s": round(n / wall_s, 2),
        "stream_wall_scope": "the whole --once run: query start and model load from the "
        "registry included (paid once by a long-running stream)",
        "batches": summary["batches"],
        "stream_photos_per_s_per_core": round(streamed / slots, 2),
        "peak_rss_mb": round(memory.peak_mb),
        "peak_pss_mb": round(memory.peak_pss_mb),
        "peak_rss_by_process": memory.peak_by_kind,
        "peak_rss_scope": "stream phase: driver + Spark JVM + Python workers (sum of RSS)",
        "warm_up": f"excluded: 1 batch per bare process; {_WARM_UP_PASSES} --once passes of "
        f"{warm_n} photos",
        "spark_master": config.spark.master,
        "stream_java_options": config.spark.stream_java_options,
        "task_slots": slots,
        "arrow_batch_size": batch,
        "model": model_from,
        **baseline_figures,
        **machine(),
    }


def batch_figures(
    config: Config, photos: list[Path], folder: Path, *, stream_photos_per_s: float | None = None
) -> dict[str, Any]:
    """The batch job's featurization of ``photos``, copied into ``folder/<Class>/``, with a
    fresh features table under ``folder``, in this process' SparkSession: photos per second,
    and their ratio to the stream's when given."""
    from fruits.features.store import featurize_labelled
    from fruits.sinks.delta_rs import DeltaRsLake
    from fruits.spark import get_spark

    tree = folder / "photos"
    for photo in photos:
        (tree / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, tree / photo.parent.name / photo.name)
    spark = get_spark(config, streaming=True)  # the stream's session when it ran before
    chunk = config.training.feature_chunk_size
    started = time.perf_counter()
    _, run = featurize_labelled(
        spark,
        DeltaRsLake(str(folder / "lake")),
        str(tree),
        split="bench",
        spec=ExtractorSpec.from_config(config),
        images=config.images,
        chunk_size=chunk,
    )
    seconds = time.perf_counter() - started
    if run.computed != len(photos):
        raise RuntimeError(f"the batch pass featurized {run.computed} of {len(photos)} photos")
    per_s = len(photos) / seconds
    figures: dict[str, Any] = {
        "batch_photos_per_s": round(per_s, 2),
        "batch_seconds": round(seconds, 2),
        "batch_chunk_size": chunk,
        "batch_scope": "featurize_labelled (fruits train / evaluate) on the same photos in a "
        "<Class>/ tree, fresh features table: listing, cache lookup, one Spark job per chunk "
        "(read, hash, featurize), a Delta commit per chunk, the features DataFrame",
    }
    if stream_photos_per_s:
        figures["batch_to_stream_ratio"] = round(per_s / stream_photos_per_s, 3)
    return figures


def _stream_floor(config: Config, photos: list[Path], folder: Path) -> dict[str, Any]:
    """One more ``--once`` pass over files the size of ``photos`` that are not photos."""
    from streaming.job import run_stream

    folder.mkdir(parents=True)
    fakes = []
    for i, photo in enumerate(photos):
        fake = folder / f"not-a-photo-{i:05d}.jpg"
        size = photo.stat().st_size
        fake.write_bytes((b"FRUITS BENCH: NOT A PHOTO " + os.urandom(size))[:size])
        fakes.append(fake)
    drop_photos(fakes, Path(config.path("landing")))
    return run_stream(config, once=True)


def run_sizes(
    config: Config,
    *,
    images: str,
    n: int,
    sizes: list[int],
    backends: list[Backend],
    layers: list[str] | None = None,
) -> dict[str, Any]:
    """The bare featurizer for every (layer, size, backend), one after the other in this
    process on the same photos: the speed column of the input-size study. The baseline
    (keras, 299, whole network) runs first: every speed-up is relative to it."""
    slots = spark_cores(config.spark.master)
    batch = config.spark.arrow_batch_size
    blobs = [p.read_bytes() for p in pick_photos(images, n)]
    seed: tuple[str, int, Backend] = (FULL_NETWORK, 299, "keras")
    settings = [seed] + [
        setting
        for setting in itertools.product(layers or [config.featurizer.layer], sizes, backends)
        if setting != seed
    ]
    rows: list[dict[str, Any]] = []
    for layer, size, backend in settings:
        spec = ExtractorSpec.from_config(config, image_size=size, layer=layer)
        spec = dataclasses.replace(spec, backend=backend)
        prepare_backend(spec)
        log(f"bench: bare featurizer, {backend} at {size}, {layer}")
        seconds = bare_throughput(blobs, spec, processes=slots, batch=batch)
        rows.append(
            {"backend": backend, "image_size": size, "layer": layer, "photos_per_s": n / seconds}
        )
    reference = rows[0]["photos_per_s"]
    for row in rows:
        row["speedup_vs_keras_299"] = round(row["photos_per_s"] / reference, 2)
        row["photos_per_s"] = round(row["photos_per_s"], 2)
    return {
        "n": n,
        "processes": slots,
        "arrow_batch_size": batch,
        "results": rows,
        "warm_up": "excluded: 1 batch per process",
        **machine(),
    }


def bare_throughput(
    blobs: list[bytes], spec: ExtractorSpec, *, processes: int, batch: int
) -> float:
    """Seconds for ``processes`` processes to featurize ``blobs`` (split evenly), from the
    moment all of them have loaded their model, to the moment the last one is done."""
    shards = [blobs[i::processes] for i in range(processes)]
    context = multiprocessing.get_context("spawn")  # no Spark, no TF state inherited
    barrier = context.Barrier(processes)
    with ProcessPoolExecutor(
        processes, mp_context=context, initializer=_set_barrier, initargs=(barrier,)
    ) as pool:
        spans = list(pool.map(_featurize_shard, shards, [spec] * processes, [batch] * processes))
    return max(end for _, end in spans) - min(start for start, _ in spans)


_BARRIER: Any = None


def _set_barrier(barrier: Any) -> None:
    global _BARRIER
    _BARRIER = barrier


def _featurize_shard(blobs: list[bytes], spec: ExtractorSpec, batch: int) -> tuple[float, float]:
    featurize_frame(pd.Series(blobs[:batch]), spec)  # model load + first inference: excluded
    _BARRIER.wait()
    start = time.time()
    for i in range(0, len(blobs), batch):
        result = featurize_frame(pd.Series(blobs[i : i + batch]), spec)
        if result["reason"].notna().any():
            raise RuntimeError(f"unusable photo in the benchmark set: {result['detail'].dropna()}")
    return start, time.time()
