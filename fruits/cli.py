"""The ``fruits`` command: argument parsing only; each subcommand calls one job function.

Every subcommand takes ``--config FILE`` and honours ``FRUITS_ROOT``/``FRUITS_WEIGHTS``. Results
go to stdout, the last line being one JSON object; progress goes to stderr. A broken setup
(bad config, missing data, no model) prints one ``fruits: error: ...`` line and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from fruits.config import CONFIG_ENV, DEFAULT_CONFIG, PACKAGED_CONFIGS, Config, load_config
from fruits.errors import ConfigError, FruitsError, RegistryError
from fruits.features.inception import LAYERS, is_layer
from fruits.secrets import redact
from fruits.sinks.tables import SCHEMAS

__all__ = ["main"]


def _train(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    from batch.train import run_training

    data = ",".join(args.data) if args.data else config.training.data
    if not data:
        raise ConfigError("no data folder: pass --data DIR or set 'training.data' (FRUITS_DATA)")
    if args.leave_out_share is not None:
        settings = dataclasses.replace(config.training, leave_out_share=args.leave_out_share)
        config = dataclasses.replace(config, training=settings)
    return run_training(config, data, promote=not args.no_promote)


def _evaluate(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    from batch.evaluate import run_evaluation

    return run_evaluation(
        config,
        args.data,
        version=args.model_version,
        report=args.report,
        non_produce=args.non_produce,
    )


def _promote(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    from fruits.model.registry import CHAMPION, ModelRegistry

    registry = ModelRegistry(config)
    previous = registry.promote(args.version)
    print(f"{registry}: '{CHAMPION}' moved from v{previous} to v{args.version}", file=sys.stderr)
    return {"model_version": args.version, "previous_version": previous}


def _models(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    import datetime as dt

    from fruits.model.registry import ModelRegistry

    registry = ModelRegistry(config)
    versions = registry.versions()
    print(f"{registry}:")
    for v in versions:
        created = dt.datetime.fromtimestamp(v.created_ms / 1000, dt.UTC)
        accuracy = "  ".join(
            f"{s} {'-' if a is None else f'{a:.4f}'}" for s, a in v.metrics.items()
        )
        print(
            f"{'*' if v.aliases else ' '} v{v.version:<4} {created:%Y-%m-%d %H:%M:%S}  "
            f"{v.tags.get('classifier', '?'):<20} accuracy {accuracy}"
            f"{'  @' + ' @'.join(v.aliases) if v.aliases else ''}"
        )
    return {
        "model": registry.name,
        "champion": next((v.version for v in versions if "champion" in v.aliases), None),
        "versions": [
            {"version": v.version, "aliases": list(v.aliases), "run_id": v.run_id, **v.metrics}
            for v in versions
        ],
    }


def _stream(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    from fruits.console import log
    from fruits.model.registry import ModelRegistry
    from fruits.spark import stream_process
    from streaming.job import run_stream

    stream_process()  # a first model trained below starts the JVM: with the stream's flags
    try:
        untrained = ModelRegistry(config).champion() is None
    except RegistryError:  # unreadable now: the stream waits for it, retrying (or --once fails)
        untrained = False
    if untrained:
        data = args.train_data or config.training.data
        if not data:
            raise ConfigError(
                "no model yet: pass --train-data DIR (or set training.data / FRUITS_DATA) "
                "to train a first one"
            )
        from batch.train import run_training

        log(f"no model yet: training a first one from {data}")
        run_training(config, data)
    log(
        f"drop photos into {config.path('landing')} (or: fruits upload PHOTO...); "
        "see predictions with: fruits status"
    )
    return run_stream(config, once=args.once)


def _status(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    if args.check:
        return _check(config, args)
    from fruits.observe.status import collect_status, format_status

    status = collect_status(config, last=args.last)
    if not args.json:
        print(format_status(status))
    return status


def _check(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """``status --check``: exit 1 when a health rule fails (2: the check itself could not run)."""
    from fruits.observe.health import check_health, format_findings

    findings = check_health(config)
    if not args.json:
        print(format_findings(findings))
    healthy = all(f.ok for f in findings)
    args.exit_code = 0 if healthy else 1
    return {"healthy": healthy, "findings": [f.as_dict() for f in findings]}


def _dashboard(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    from fruits.observe.dashboard import serve_dashboard

    return {"url": serve_dashboard(config, host=args.host, port=args.port)}


def _maintain(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    from fruits.sinks.maintenance import maintain_lake

    # The table properties (log retention, checkpoint interval) are set here, not by the
    # stream's own maintenance: a metadata commit makes a concurrent append fail.
    results = maintain_lake(config, tables=args.table or None, set_properties=True)
    for r in results:
        print(
            f"{r.table}: files {r.files_before} -> {r.files_after} "
            f"({r.files_compacted} compacted, {r.files_vacuumed} vacuumed), "
            f"version {r.version_before} -> {r.version_after}, {r.seconds:.2f} s",
            file=sys.stderr,
        )
    return {"tables": [r.as_dict() for r in results]}


def _upload(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    from fruits.console import progress_printer
    from fruits.upload import plan_upload, upload

    plan = plan_upload(args.paths, config.images.extensions)
    summary = upload(
        plan, config.path("landing"), azure=config.azure, progress=progress_printer("upload")
    )
    return {
        "to": config.path("landing"),
        "uploaded": summary.uploaded,
        "skipped_same_content": summary.skipped_same_content,
        "failed": summary.failed,
    }


def _bench(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "spark_conf", None):
        # Read by PySpark when it launches the JVM: extra Spark settings for this run only.
        confs = " ".join(f"--conf {item}" for item in args.spark_conf)
        os.environ["PYSPARK_SUBMIT_ARGS"] = f"{confs} pyspark-shell"
    print(f"command: fruits {' '.join(sys.argv[1:])}", file=sys.stderr)
    if args.kind in ("throughput", "latency"):
        # What both benchmarks share: the photos, the featurizer setting, the model.
        setting = {
            "images": args.images,
            "backend": args.backend,
            "image_size": args.image_size,
            "layer": args.layer,
            "models": args.models,
        }
        if args.kind == "throughput":
            from bench.throughput import run_throughput

            return run_throughput(config, n=args.n, baseline=args.baseline, **setting)
        from bench.latency import run_latency

        return run_latency(
            config,
            rate=args.rate,
            seconds=args.seconds,
            burst=args.burst,
            idle_probe_s=args.idle_probe,
            **setting,
        )
    if args.kind == "masters":
        from bench.masters import run_masters

        return run_masters(
            images=args.images,
            n=args.n,
            masters=args.masters,
            models=args.models,
            with_ui=args.with_ui,
            config=args.config,
        )
    if args.kind == "sizes":
        from bench.throughput import run_sizes

        return run_sizes(
            config,
            images=args.images,
            n=args.n,
            sizes=args.sizes,
            backends=args.backends,
            layers=args.layers,
        )
    if args.kind == "soak":
        from bench.soak import run_soak

        return run_soak(
            config,
            images=args.images,
            rate=args.rate,
            minutes=args.minutes,
            sample_s=args.sample_seconds,
            warm_up_minutes=args.warm_up_minutes,
            bad_every=args.bad_every,
            models=args.models,
            out=args.out,
        )
    if args.kind == "dashboard":
        from bench.dashboard import run_dashboard

        return run_dashboard(
            config,
            images=args.images,
            rows=args.rows,
            appends=args.appends,
            requests=args.requests,
            keep=args.keep,
        )
    from bench.discovery import run_discovery

    return run_discovery(sizes=args.files, new_files=args.new_files, triggers=args.triggers)


def _layer(value: str) -> str:
    """An argparse type: ``mixed3`` or blocks joined by ``+`` (``mixed2+mixed3``)."""
    if not is_layer(value):
        raise argparse.ArgumentTypeError(
            f"{value!r}: one of {', '.join(LAYERS)}, or several joined by '+'"
        )
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fruits", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        help="YAML configuration file, or the name of a packaged one "
        f"({', '.join(PACKAGED_CONFIGS)}); default: ${CONFIG_ENV}, else {DEFAULT_CONFIG}",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", parents=[common], help="train, evaluate, register a model and make it champion"
    )
    train.add_argument(
        "--data",
        action="append",
        help="a labelled dataset: a Fruits-360 folder (Training/<Class>/*.jpg, and Test/) or a "
        "Grocery Store Dataset folder (train/, val/, classes.csv); [LAYOUT=]LOCATION, repeated "
        "or comma-separated for several at once",
    )
    train.add_argument(
        "--leave-out-share",
        type=float,
        help="leave this seeded random share of the classes out of training, to measure how "
        "many of their Test photos are answered unknown (training.leave_out_share)",
    )
    train.add_argument(
        "--no-promote", action="store_true", help="register the version without making it champion"
    )
    train.set_defaults(handler=_train)

    evaluate = sub.add_parser(
        "evaluate",
        parents=[common],
        help="score labelled photos with a model, per dataset and at both levels (kind, variety)",
    )
    evaluate.add_argument(
        "--data",
        required=True,
        action="append",
        help="a <Class>/*.jpg folder, or a dataset root (Fruits-360: its Test/; Grocery: its "
        "val/); repeated or comma-separated, each reported on its own",
    )
    evaluate.add_argument(
        "--non-produce",
        help="a folder of folders of photos that are not produce (<any name>/*.jpg): the share "
        "answered unknown is reported",
    )
    evaluate.add_argument("--model-version", type=int, help="default: the champion")
    evaluate.add_argument(
        "--report",
        help="folder for evaluation.json, kind_confusion.png, mistakes.png and unknown_curve.png "
        "(default: "
        "{root}/reports/evaluate-v<version>)",
    )
    evaluate.set_defaults(handler=_evaluate)

    promote = sub.add_parser(
        "promote",
        parents=[common],
        help="point the 'champion' alias at a version (rollback = an older one)",
    )
    promote.add_argument("version", type=int)
    promote.set_defaults(handler=_promote)

    models = sub.add_parser(
        "models", parents=[common], help="list model versions, their metrics and aliases"
    )
    models.set_defaults(handler=_models)

    stream = sub.add_parser(
        "stream", parents=[common], help="classify new photos in the landing area into Delta"
    )
    stream.add_argument(
        "--once", action="store_true", help="process what is there now, then exit (availableNow)"
    )
    stream.add_argument("--train-data", help="if no model exists yet, train one from this folder")
    stream.set_defaults(handler=_stream)

    status = sub.add_parser("status", parents=[common], help="tables, model and latency")
    status.add_argument("--json", action="store_true", help="one JSON line only")
    status.add_argument(
        "--last", type=int, default=5, help="newest answers shown per table (default: %(default)s)"
    )
    status.add_argument(
        "--check",
        action="store_true",
        help="apply the health rules (config section 'health'): exit 1 when one fails",
    )
    status.set_defaults(handler=_status)

    dashboard = sub.add_parser(
        "dashboard",
        parents=[common],
        help="a local web page over the tables and the registry, refreshing itself (read-only)",
    )
    dashboard.add_argument("--host", help="address to listen on (default: dashboard.host)")
    dashboard.add_argument(
        "--port", type=int, help="port to listen on, 0 for a free one (default: dashboard.port)"
    )
    dashboard.set_defaults(handler=_dashboard)

    maintain = sub.add_parser(
        "maintain",
        parents=[common],
        help="compact, vacuum and checkpoint the Delta tables (the stream also does it)",
    )
    maintain.add_argument(
        "--table",
        action="append",
        choices=list(SCHEMAS),
        help="only this table (repeatable; default: all)",
    )
    maintain.set_defaults(handler=_maintain)

    upload = sub.add_parser(
        "upload", parents=[common], help="put photos into the landing area (folder or Blob)"
    )
    upload.add_argument("paths", nargs="+", help="photos or folders of photos")
    upload.add_argument("--to", choices=["landing"], default="landing")
    upload.set_defaults(handler=_upload)

    bench = sub.add_parser(
        "bench",
        parents=[common],
        help="benchmarks: throughput, masters, latency, sizes, discovery, soak, dashboard",
    )
    bench_kinds = bench.add_subparsers(dest="kind", required=True)
    model_options = argparse.ArgumentParser(add_help=False)
    model_options.add_argument("--images", required=True, help="folder of <Class>/*.jpg photos")
    model_options.add_argument("--backend", choices=["keras", "onnx"], help="default: config")
    model_options.add_argument("--image-size", type=int, help="default: featurizer.image_size")
    model_options.add_argument(
        "--layer", type=_layer, help="a block or blocks joined by + (default: featurizer.layer)"
    )
    model_options.add_argument(
        "--models",
        help="a root whose mlflow.db holds a champion model, copied (default: train one now)",
    )
    model_options.add_argument(
        "--spark-conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark conf"
    )
    throughput = bench_kinds.add_parser(
        "throughput",
        parents=[common, model_options],
        help="bare featurizer vs fruits stream --once, same photos, one run",
    )
    throughput.add_argument("--n", type=int, default=512, help="photos (default: %(default)s)")
    throughput.add_argument(
        "--baseline",
        action="store_true",
        help="also time the bare featurizer of the seed: keras, 299, whole network",
    )
    latency = bench_kinds.add_parser(
        "latency", parents=[common, model_options], help="upload-to-Delta latency of a stream"
    )
    latency.add_argument("--rate", type=float, default=1.0, help="photos per second")
    latency.add_argument("--seconds", type=float, default=60.0, help="trickle duration")
    latency.add_argument("--burst", type=int, default=0, help="then drop this many at once")
    latency.add_argument(
        "--idle-probe",
        type=float,
        default=0.0,
        metavar="S",
        help="then wait S quiet seconds and time one photo (Spark ends workers idle > 60 s)",
    )
    masters = bench_kinds.add_parser(
        "masters",
        parents=[common],
        help="bench throughput on several Spark masters (local, a cluster), one run",
    )
    masters.add_argument("--images", required=True, help="folder of <Class>/*.jpg photos")
    masters.add_argument("--n", type=int, default=512, help="photos (default: %(default)s)")
    masters.add_argument(
        "--masters", nargs="+", default=["local[2]", "spark://127.0.0.1:7077"], metavar="MASTER"
    )
    masters.add_argument("--models", help="a trained registry to copy (default: train one)")
    masters.add_argument(
        "--with-ui", action="store_true", help="also the first master with the Spark UI on"
    )
    sizes = bench_kinds.add_parser(
        "sizes", parents=[common], help="bare featurizer speed per backend and input size"
    )
    sizes.add_argument("--images", required=True, help="folder of <Class>/*.jpg photos")
    sizes.add_argument("--n", type=int, default=64, help="photos (default: %(default)s)")
    sizes.add_argument("--sizes", type=int, nargs="+", default=[299, 224, 150, 100])
    sizes.add_argument(
        "--backends", nargs="+", choices=["keras", "onnx"], default=["keras", "onnx"]
    )
    sizes.add_argument(
        "--layers", nargs="+", type=_layer, default=None, help="default: featurizer.layer"
    )
    dashboard_bench = bench_kinds.add_parser(
        "dashboard",
        parents=[common],
        help="fruits dashboard's response times with a day of predictions in the lake",
    )
    dashboard_bench.add_argument(
        "--images", required=True, help="a folder of .jpg photos (the newest rows' thumbnails)"
    )
    dashboard_bench.add_argument(
        "--rows", type=int, default=100_000, help="prediction rows (default: %(default)s)"
    )
    dashboard_bench.add_argument(
        "--appends", type=int, default=1000, help="appends writing them (default: %(default)s)"
    )
    dashboard_bench.add_argument(
        "--requests", type=int, default=20, help="timed requests each (default: %(default)s)"
    )
    dashboard_bench.add_argument(
        "--keep", action="store_true", help="keep the throw-away root (its path is printed)"
    )
    discovery = bench_kinds.add_parser(
        "discovery", parents=[common], help="listing vs notification cost, simulated"
    )
    discovery.add_argument(
        "--files", type=int, nargs="+", default=[1000, 10000, 100000], help="files in the landing"
    )
    discovery.add_argument("--new-files", type=int, default=10, help="new files per trigger")
    discovery.add_argument("--triggers", type=int, default=5, help="triggers timed per size")
    soak = bench_kinds.add_parser(
        "soak",
        parents=[common],
        help="a long-running stream fed R photos/s: memory, batch time, files, state over time",
    )
    soak.add_argument("--images", required=True, help="folder of <Class>/*.jpg photos")
    soak.add_argument("--rate", type=float, default=5.0, help="photos per second")
    soak.add_argument("--minutes", type=float, default=60.0, help="how long to feed it")
    soak.add_argument("--sample-seconds", type=float, default=30.0, help="sampling interval")
    soak.add_argument(
        "--warm-up-minutes", type=float, help="left out of the trends (default: min(10, M/6))"
    )
    soak.add_argument(
        "--bad-every", type=int, default=50, help="one truncated JPEG in N files (0: none)"
    )
    soak.add_argument("--models", help="a trained registry to copy (default: train one)")
    soak.add_argument("--out", help="folder for soak.json and soak.png (default: its root)")
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler: Callable[[Config, argparse.Namespace], dict[str, Any]] = args.handler
    try:
        config = load_config(args.config)
        result = handler(config, args)
    except FruitsError as exc:
        print(f"fruits: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fruits: interrupted", file=sys.stderr)
        return 130
    except Exception:
        # An unexpected failure keeps its traceback (for whoever debugs it), with any key,
        # token or connection string an SDK put into a message masked.
        print(redact(traceback.format_exc()), file=sys.stderr, end="")
        return 1
    print(json.dumps(result, default=str))
    # A handler may set a verdict that is not an error (status --check: 1 when unhealthy).
    return int(getattr(args, "exit_code", 0))


def run() -> None:
    """The console entry point: ``main``, then a prompt exit.

    Locally it stops Spark cleanly, then leaves with ``os._exit``: native threads of
    delta-rs/Arrow can abort the interpreter's teardown (exit 134) after all the work is done
    and printed. Inside a Databricks task the session is the cluster's, shared with whatever
    runs next, and the process is the runtime's: neither is stopped, and a failure is an
    ordinary ``SystemExit``.
    """
    code = main()
    from fruits.spark import on_databricks

    if on_databricks():
        if code:
            raise SystemExit(code)
        return
    try:
        spark_sql = sys.modules.get("pyspark.sql")  # only if this command used Spark
        active = spark_sql.SparkSession.getActiveSession() if spark_sql else None
        if active is not None:
            active.stop()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    run()
