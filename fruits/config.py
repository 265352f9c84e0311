"""Typed configuration: one YAML per environment, overridden by environment variables.

The YAML is validated once, at start: an unknown key, a value of the wrong type, a missing
weights file, an unset ``${NAME}`` environment variable a value refers to or a ``<placeholder>``
left in a value fails with a :class:`ConfigError` whose one-line message names the key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import yaml

from fruits.errors import ConfigError
from fruits.features.inception import LAYERS, is_layer

__all__ = [
    "CLASSIFIER_NAMES",
    "AzureConfig",
    "Config",
    "DashboardConfig",
    "EventHubConfig",
    "FeaturizerConfig",
    "HealthConfig",
    "ImagesConfig",
    "MaintenanceConfig",
    "MlflowConfig",
    "PathsConfig",
    "SparkConfig",
    "StreamConfig",
    "TrainingConfig",
    "config_file",
    "is_url",
    "load_config",
]

CLASSIFIER_NAMES = ("logistic_regression", "decision_tree", "random_forest")
_URL_SCHEMES = ("az://", "abfs://", "abfss://", "wasb://", "wasbs://", "dbfs:/", "s3://", "gs://")
# The embedded default ships inside the package (fruits/conf/, which the checkout's conf/ links
# to): a bare name picks one of these files, from any working directory.
PACKAGED_CONFIGS = ("local", "azurite", "databricks")
DEFAULT_CONFIG = "local"
CONFIG_ENV = "FRUITS_CONFIG"

# Shortcut variables named in the README; any key is reachable as FRUITS__SECTION__KEY too.
_ENV_SHORTCUTS = {
    "FRUITS_ROOT": ("root",),
    "FRUITS_WEIGHTS": ("featurizer", "weights"),
    "FRUITS_DATA": ("training", "data"),
}


@dataclass(frozen=True)
class PathsConfig:
    lake: str = "{root}/lake"
    checkpoints: str = "{root}/checkpoints"
    landing: str = "{root}/landing"
    # Where stream.clean_source: archive moves processed files; never under the landing.
    archive: str = "{root}/archive"


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "fruits"
    driver_memory: str = "4g"
    arrow_batch_size: int = 8
    shuffle_partitions: int = 8
    delta_writer: Literal["deltars", "spark"] = "deltars"
    # Flags for the JVM a job starts itself (local mode); a cluster's JVM is the cluster's.
    java_options: str | None = None  # batch jobs: train, evaluate
    stream_java_options: str | None = "-XX:TieredStopAtLevel=1"  # the streaming job
    # Spark Connect (sc://host:port): the jobs run as a client of that server; master, driver
    # memory and JVM flags are then the server's.
    remote: str | None = None
    # On a cluster (spark://, yarn, k8s://): memory and cores of each executor; null: Spark's.
    executor_memory: str | None = None
    executor_cores: int | None = None
    # The Spark UI (Jobs, SQL, Structured Streaming tabs): off for the batch jobs, on for the
    # long-running stream (its address is logged at start); ui_port, or the next free one.
    ui: bool = False
    stream_ui: bool = True
    ui_port: int = 4040


# The pretrained networks the features can come from (fruits/features/featurizer.py).
Backbone = Literal["inception_v3", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@dataclass(frozen=True)
class FeaturizerConfig:
    backbone: Backbone = "inception_v3"
    weights: str = "imagenet"
    image_size: int = 100
    # The InceptionV3 block(s) pooled into features, joined by "+" (fruits/inception.py).
    layer: str = "mixed2+mixed3"
    # Below 1: the features of the whole photo and of its central share, averaged.
    centre_crop: float = 1.0
    backend: Literal["keras", "onnx"] = "onnx"
    intra_op_threads: int = 1
    # Where the ONNX export is cached; None: beside the weights if that folder is writable,
    # else "{root}/cache/onnx" (fruits.features.featurizer.onnx_dir).
    onnx_dir: str | None = None


@dataclass(frozen=True)
class ImagesConfig:
    # azurite.yaml and databricks.yaml take this default (local.yaml lists the same).
    extensions: tuple[str, ...] = (
        "jpg",
        "jpeg",
        "png",
        "gif",
        "webp",
        "heic",
        "heif",
        "avif",
        "mpo",
    )
    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000


@dataclass(frozen=True)
class TrainingConfig:
    data: str | None = None
    explained_variance: float = 0.995
    classifiers: tuple[str, ...] = CLASSIFIER_NAMES
    classifier: str = "best"
    validation_fraction: float = 0.2
    unknown_reject_share: float = 0.02
    # Per domain: "variety not sure" below the probability that leaves at most this share of
    # its validation photos answered a wrong variety as sure (fruits/model/answers.py).
    variety_wrong_share: float = 0.05
    # What answers "unknown" (fruits/model/unknown.py): fused, distance, probability or both.
    unknown_detector: Literal["fused", "distance", "probability", "both"] = "fused"
    unknown_neighbours: int = 1  # the distance is to the k-th nearest training photo
    unknown_dims: int = 64  # leading directions of the features the distance is measured in
    regularization: float = 2e-4  # logistic regression's L2 (Spark's regParam)
    refit_all: bool = True  # refit the chosen settings on training + validation photos
    leave_out_share: float = 0.0  # a seeded share of classes left out: measures "unknown"
    augmentations: int = 0  # synthetic phone photos per studio training photo (augment.py)
    top_k: int = 3
    seed: int = 42
    feature_chunk_size: int = 512


@dataclass(frozen=True)
class StreamConfig:
    trigger_interval: str = "1 second"
    max_files_per_trigger: int = 1000
    max_bytes_per_trigger: int | None = None
    include_existing_files: bool = True
    query_name: str = "predictions"
    batch_timeout_s: float | None = 600.0
    # "listing" lists the landing each trigger (a folder or Blob); "notification" (Blob only)
    # reads BlobCreated events from a Storage Queue (cost grows with new photos, not the
    # container).
    discovery: Literal["listing", "notification"] = "listing"
    queue: str = "landing-events"
    backfill_interval: str | None = "1 hour"  # notification mode: a listing pass this often
    max_file_age: str = "7 days"  # discovery state keeps file keys this long (bounded state)
    # An optional glob on the file's name (not its folders), on top of images.extensions, on
    # every source alike, e.g. "IMG_*": a file must match both to be discovered.
    path_glob: str | None = None
    # Databricks: Auto Loader (cloudFiles) instead of the Python sources; needs its runtime.
    autoloader: bool = False
    # Auto Loader's notification mode: "file_events" (a Unity Catalog external location with
    # file events; cloudFiles.useManagedFileEvents, no credential) or "queue" (your Storage
    # Queue, named by `queue`, its connection string in the variable named below).
    autoloader_notifications: Literal["file_events", "queue"] = "file_events"
    queue_connection_string_env: str = "AUTOLOADER_QUEUE_CONNECTION_STRING"
    # Landing clean-up (Auto Loader's cleanSource): files of committed micro-batches are moved
    # to paths.archive ("archive") or deleted ("delete"), never before both tables hold them.
    clean_source: Literal["off", "archive", "delete"] = "off"
    # How long after its batch's commit a file waits; None: at the commit (Auto Loader: its
    # own default of 30 days). Auto Loader needs more than 7 days to delete.
    clean_source_retention: str | None = None


@dataclass(frozen=True)
class AzureConfig:
    """The storage account behind az:// paths. Never holds a secret: the connection string is
    read from the environment variable named here (a secret scope on Databricks)."""

    use_emulator: bool = False
    account_name: str | None = None
    connection_string_env: str = "AZURE_STORAGE_CONNECTION_STRING"


@dataclass(frozen=True)
class EventHubConfig:
    """Event Hubs publishing of predictions (fruits/sinks/eventhubs.py). No secret lives here:
    ``connection_string_env`` is the NAME of the environment variable that holds it."""

    enabled: bool = False
    connection_string_env: str = "EVENTHUB_CONNECTION_STR"
    fully_qualified_namespace: str | None = None  # with no connection string: managed identity
    name: str = "predictions"  # the event hub (must match EntityPath when the string has one)
    publish_timeout_s: float = 10.0
    retry_interval_s: float = 30.0
    # With no outbox cursor yet (Event Hubs enabled on a lake with history): False starts at
    # the current predictions version (the history is not published), True publishes it.
    backfill: bool = False


# How much longer than the vacuum retention a removed file stays listed in the log's
# checkpoints (delta.deletedFileRetentionDuration). Vacuum deletes only the files the log
# lists as removed, and a checkpoint stops listing them once that duration has passed: a
# checkpoint written between that moment and the next maintenance pass would hide them from
# every later vacuum, left on storage for good (RELIABILITY.md, Soak, shows it happen).
# Three hours outlast the gap between two passes (15 minutes in the stream, an
# hour for the bundle's job) with room for missed ones; longer costs more: each pass deletes
# again every listed file past the vacuum retention (absent by then, but a call each).
TOMBSTONE_GRACE_HOURS = 3.0


@dataclass(frozen=True)
class MaintenanceConfig:
    """Delta maintenance of every table (fruits/sinks/maintenance.py): compaction of small
    files, vacuum and log checkpoints, by the stream (a background thread) and `fruits maintain`.
    """

    enabled: bool = True  # run by the stream; `fruits maintain` runs whatever this says
    every_batches: int = 600  # the stream maintains after this many micro-batches...
    every_minutes: float = 15.0  # ...or this many minutes, whichever comes first
    target_file_size_mb: int = 128  # compaction bins small files into files of about this size
    # Removed files are deleted this long after their removal (readers' and time travel's
    # margin), and never while the Event Hubs outbox still has to read them.
    vacuum_retention_hours: float = 168.0
    log_retention_hours: float = 720.0  # delta.logRetentionDuration: the log's time travel
    checkpoint_interval: int = 100  # delta.checkpointInterval: commits between checkpoints
    # A process's first pass and every Nth after it also deletes orphaned data files (no log
    # entry references them: a crashed writer's), older than the retention; 0: never.
    full_vacuum_every: int = 24


@dataclass(frozen=True)
class MlflowConfig:
    """MLflow: the tracking store (runs), the model registry (versions, the ``champion`` alias)
    and where their files go. ``{root}`` is replaced by the root (made absolute when local)."""

    tracking_uri: str = "sqlite:///{root}/mlflow.db"
    registry_uri: str | None = None  # None: the tracking URI's own registry
    model_name: str = "fruits"  # on Unity Catalog: catalog.schema.fruits
    experiment: str = "fruits"  # on Databricks: a workspace path such as /Shared/fruits
    # Where a new experiment keeps runs' and models' files; None: the tracking store's default.
    artifact_location: str | None = "{root}/mlartifacts"
    # A model version that failed to load is tried again this long after (and a stream with no
    # model to serve retries at most this far apart): long enough that a broken version costs
    # one download and one log line per interval, short enough that a transient failure heals.
    retry_interval_s: float = 300.0


@dataclass(frozen=True)
class HealthConfig:
    """The rules of ``fruits status --check`` (fruits/observe/health.py): each fails when its
    figure passes the threshold here; the Docker image's HEALTHCHECK runs it."""

    max_upload_wait_s: float = 300.0  # stream_behind: the oldest photo waiting, at most this old
    max_batch_gap_s: float = 900.0  # stream_stalled: photos wait and no batch for this long
    window: str = "1 hour"  # unknown_share and quarantine_share look at this recent stretch
    min_photos: int = 20  # fewer photos than this in the window: no judgement of the shares
    max_unknown_share: float = 0.25
    unknown_vs_last_week: float = 3.0  # ...or more than this times the 7 days before's share
    min_week_photos: int = 200  # ...when those 7 days had at least this many photos
    max_quarantine_share: float = 0.1
    max_confidence_drift: float = 0.3  # drift: the confidence bins' total variation distance
    max_answer_drift: float | None = None  # ...and the answers' (None: shown, not checked)


@dataclass(frozen=True)
class DashboardConfig:
    """``fruits dashboard`` (fruits/observe/dashboard.py): where the local page listens, how
    often it refreshes itself and how many recent hours it shows."""

    host: str = "127.0.0.1"  # this machine only; 0.0.0.0 shows it to the network
    port: int = 8765
    refresh_s: float = 5.0
    window_hours: float = 3.0


@dataclass(frozen=True)
class Config:
    root: str = "./fruits-data"
    paths: PathsConfig = field(default_factory=PathsConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    azure: AzureConfig = field(default_factory=AzureConfig)
    eventhub: EventHubConfig = field(default_factory=EventHubConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    source: str = "<defaults>"

    def path(self, name: Literal["lake", "checkpoints", "landing", "archive"]) -> str:
        """A configured location with ``{root}`` resolved: a URL, or an absolute local path (a
        cluster's executors and a Spark Connect server do not share this process' working
        directory)."""
        template: str = getattr(self.paths, name)
        location = template.replace("{root}", self.root)
        return location if is_url(location) else os.path.abspath(location)

    def table_path(self, table: str) -> str:
        return f"{self.path('lake').rstrip('/')}/{table}"

    def mlflow_uri(
        self, name: Literal["tracking_uri", "registry_uri", "artifact_location"]
    ) -> str | None:
        """An ``mlflow`` location with ``{root}`` resolved; a local root is made absolute, so
        ``sqlite:///{root}/mlflow.db`` names the same file from any working directory."""
        template: str | None = getattr(self.mlflow, name)
        if template is None:
            return None
        root = self.root if is_url(self.root) else os.path.abspath(self.root)
        return template.replace("{root}", root.rstrip("/"))


def is_url(location: str) -> bool:
    """A configured location is a URL (Blob, ADLS, DBFS...) or else a local path."""
    return location.startswith(_URL_SCHEMES)


def load_config(
    path: str | Path | None = None, *, environ: typing.Mapping[str, str] | None = None
) -> Config:
    """Read ``path`` (default: ``$FRUITS_CONFIG``, else the packaged ``local``), apply
    environment overrides, validate. ``path`` is a YAML file or the name of a packaged one."""
    environ = os.environ if environ is None else environ
    file = config_file(path if path is not None else environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {file}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {file} cannot be read: {_one_line(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {file} must hold a mapping of sections")
    _apply_environment(raw, environ)
    _resolve_references(raw, environ, prefix="", source=str(file))
    config: Config = _build(Config, raw, prefix="", source=str(file))
    config = dataclasses.replace(config, source=str(file))
    _validate(config)
    return config


def config_file(name: str | Path) -> Path | Traversable:
    """A YAML file, or for a bare name (``local``, ``azurite``, ``databricks``) the packaged file
    of that name: the same YAML that ``conf/`` holds in a checkout."""
    if str(name) in PACKAGED_CONFIGS:
        return resources.files("fruits") / "conf" / f"{name}.yaml"
    return Path(name)


def _apply_environment(raw: dict[str, Any], environ: typing.Mapping[str, str]) -> None:
    overrides: list[tuple[tuple[str, ...], str]] = [
        (keys, environ[var]) for var, keys in _ENV_SHORTCUTS.items() if environ.get(var)
    ]
    for var, value in environ.items():
        if var.startswith("FRUITS__"):
            overrides.append((tuple(part.lower() for part in var[8:].split("__")), value))
    for keys, value in overrides:
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment override of '{'.'.join(keys)}': not a section")
        # YAML parsing gives "8" -> 8 and "[a, b]" -> list, as in the file.
        node[keys[-1]] = yaml.safe_load(value) if value.strip() else value


# ``${NAME}`` in a value is the environment variable NAME: what only a deployment knows (the
# storage account, the Unity Catalog schema) is given by the job that runs the packaged file
# (databricks.yml), and an unset one stops the job at start, naming the key.
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A template's `<account>` left in a value: refused, never used as a path or a name.
_PLACEHOLDER = re.compile(r"<[A-Za-z][A-Za-z0-9_.\- ]*>")


def _resolve_references(
    node: dict[str, Any], environ: typing.Mapping[str, str], *, prefix: str, source: str
) -> None:
    """Replace each ``${NAME}`` by its variable, and refuse a ``<placeholder>``, in place."""
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _resolve_references(value, environ, prefix=f"{name}.", source=source)
        elif isinstance(value, list):
            node[key] = [_resolve_value(v, environ, key=name, source=source) for v in value]
        else:
            node[key] = _resolve_value(value, environ, key=name, source=source)


def _resolve_value(value: Any, environ: typing.Mapping[str, str], *, key: str, source: str) -> Any:
    if not isinstance(value, str):
        return value
    override = "FRUITS__" + key.upper().replace(".", "__")

    def variable(match: re.Match[str]) -> str:
        if not environ.get(match[1]):
            raise ConfigError(
                f"config key '{key}' needs the environment variable {match[1]}, which is not set "
                f"({source}; or set {override})"
            )
        return environ[match[1]]

    value = _ENV_REFERENCE.sub(variable, value)
    placeholder = _PLACEHOLDER.search(value)
    if placeholder:
        raise ConfigError(
            f"config key '{key}' still holds the placeholder {placeholder[0]} ({source}): "
            f"write the value there, or set {override}"
        )
    return value


def _build(cls: type[Any], raw: Any, *, prefix: str, source: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.')}' must be a mapping ({source})")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' in {source}")
    values: dict[str, Any] = {}
    for name in known & set(raw):
        hint = hints[name]
        key = f"{prefix}{name}"
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw[name], prefix=f"{key}.", source=source)
        else:
            values[name] = _coerce(hint, raw[name], key=key, source=source)
    return cls(**values)


def _coerce(hint: Any, value: Any, *, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    wrong = ConfigError(f"config key '{key}' has an invalid value {value!r} ({source})")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key=key, source=source)
    if origin is Literal:
        if value is False and "off" in args:
            value = "off"  # YAML 1.1 reads a bare off as false
        if value not in args:
            choices = ", ".join(map(str, args))
            raise ConfigError(f"config key '{key}' must be one of: {choices} (got {value!r})")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise wrong
        return tuple(_coerce(args[0], v, key=key, source=source) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong
        return float(value)
    if hint is str:
        if isinstance(value, dict | list) or value is None:
            raise wrong
        return str(value)
    raise wrong  # pragma: no cover - a type this loader does not know


def _validate(config: Config) -> None:
    weights = config.featurizer.weights
    if weights != "imagenet" and not Path(weights).is_file():
        raise ConfigError(
            f"config key 'featurizer.weights': weights file not found: {weights} "
            "(use 'imagenet' or a path to an .h5 file; FRUITS_WEIGHTS overrides it)"
        )
    if not 75 <= config.featurizer.image_size <= 1024:
        raise ConfigError("config key 'featurizer.image_size' must be between 75 and 1024")
    if not is_layer(config.featurizer.layer):
        raise ConfigError(
            f"config key 'featurizer.layer' must be one of: {', '.join(LAYERS)}, or several "
            f"joined by '+' (mixed2+mixed3) (got {config.featurizer.layer!r})"
        )
    if config.featurizer.backbone != "inception_v3" and config.featurizer.backend != "onnx":
        raise ConfigError(
            f"config key 'featurizer.backend' must be onnx for {config.featurizer.backbone}"
        )
    if not 0.3 <= config.featurizer.centre_crop <= 1.0:
        raise ConfigError(
            "config key 'featurizer.centre_crop' must be between 0.3 and 1 (1: no crop)"
        )
    if config.featurizer.intra_op_threads < 0:
        raise ConfigError("config key 'featurizer.intra_op_threads' must be at least 0")
    if not 0.0 < config.training.explained_variance <= 1.0:
        raise ConfigError("config key 'training.explained_variance' must be in (0, 1]")
    if not 0.0 < config.training.validation_fraction < 0.9:
        raise ConfigError("config key 'training.validation_fraction' must be in (0, 0.9)")
    if not 0.0 <= config.training.unknown_reject_share < 1.0:
        raise ConfigError("config key 'training.unknown_reject_share' must be in [0, 1)")
    if not 0 <= config.training.augmentations <= 8:
        raise ConfigError("config key 'training.augmentations' must be between 0 and 8")
    if not 0.0 <= config.training.leave_out_share < 0.5:
        raise ConfigError("config key 'training.leave_out_share' must be in [0, 0.5)")
    if not 0.0 <= config.training.variety_wrong_share <= 1.0:
        raise ConfigError("config key 'training.variety_wrong_share' must be in [0, 1]")
    if config.training.regularization < 0:
        raise ConfigError("config key 'training.regularization' must be at least 0")
    unknown = [c for c in config.training.classifiers if c not in CLASSIFIER_NAMES]
    if unknown or not config.training.classifiers:
        raise ConfigError(
            f"config key 'training.classifiers' must list some of: {', '.join(CLASSIFIER_NAMES)}"
        )
    if config.training.classifier not in ("best", *config.training.classifiers):
        raise ConfigError(
            "config key 'training.classifier' must be 'best' or one of training.classifiers"
        )
    for name in ("top_k", "feature_chunk_size", "unknown_neighbours", "unknown_dims"):
        if getattr(config.training, name) < 1:
            raise ConfigError(f"config key 'training.{name}' must be at least 1")
    if config.stream.max_files_per_trigger < 1:
        raise ConfigError("config key 'stream.max_files_per_trigger' must be at least 1")
    if not _is_interval(config.stream.trigger_interval):
        raise ConfigError(
            "config key 'stream.trigger_interval' must look like '500 milliseconds' or "
            f"'2 seconds' (got {config.stream.trigger_interval!r})"
        )
    _validate_clean_source(config)
    if (
        config.stream.discovery == "notification"
        and not config.stream.autoloader
        and not is_url(config.path("landing"))
    ):
        raise ConfigError(
            "config key 'stream.discovery' must be 'listing' for a folder landing: "
            "notifications come from Blob storage's Event Grid"
        )
    for name in ("max_file_age", "backfill_interval", "clean_source_retention"):
        value = getattr(config.stream, name)
        if value is not None and not _is_interval(value):
            raise ConfigError(
                f"config key 'stream.{name}' must look like '1 hour' or '7 days' (got {value!r})"
            )
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", config.stream.queue_connection_string_env):
        raise ConfigError(
            "config key 'stream.queue_connection_string_env' must be the NAME of an environment "
            "variable, never the connection string itself"
        )
    if not 3 <= len(config.stream.queue) <= 63:
        raise ConfigError("config key 'stream.queue' must be a queue name of 3 to 63 characters")
    remote = config.spark.remote
    if remote is not None and not re.fullmatch(r"sc://[^/\s]+(/.*)?", remote):
        raise ConfigError(
            f"config key 'spark.remote' must be a Spark Connect URL, sc://host:port "
            f"(got {remote!r})"
        )
    if config.spark.executor_cores is not None and config.spark.executor_cores < 1:
        raise ConfigError("config key 'spark.executor_cores' must be at least 1")
    if not 1024 <= config.spark.ui_port <= 65535:
        raise ConfigError("config key 'spark.ui_port' must be a port number from 1024 to 65535")
    for name in ("arrow_batch_size", "shuffle_partitions"):
        if getattr(config.spark, name) < 1:
            raise ConfigError(f"config key 'spark.{name}' must be at least 1")
    _validate_eventhub(config.eventhub)
    _validate_maintenance(config.maintenance)
    _validate_health(config.health)
    _validate_dashboard(config.dashboard)
    for name in ("tracking_uri", "model_name", "experiment"):
        if not str(getattr(config.mlflow, name)).strip():
            raise ConfigError(f"config key 'mlflow.{name}' must not be empty")


def _validate_clean_source(config: Config) -> None:
    """The clean-up settings against the landing's source (fruits/sources/uploads.py)."""
    stream = config.stream
    if stream.clean_source == "off":
        return
    landing, archive = config.path("landing").rstrip("/"), config.path("archive").rstrip("/")
    if stream.clean_source == "archive" and (
        archive == landing or archive.startswith(landing + "/")
    ):
        raise ConfigError(
            f"config key 'paths.archive' ({archive}) must not be under paths.landing: archived "
            "files would be discovered again"
        )
    retention = stream.clean_source_retention
    if not stream.autoloader and is_url(landing) != is_url(archive):
        raise ConfigError(
            f"config key 'paths.archive' ({archive}) must be on the landing's storage "
            f"({landing}): a folder beside a folder, a Blob location beside a Blob landing"
        )
    if (
        stream.autoloader
        and stream.clean_source == "delete"
        and retention is not None
        and _is_interval(retention)
        and interval_seconds(retention) <= 7 * 86400
    ):
        raise ConfigError(
            "config key 'stream.clean_source_retention' must be more than 7 days for Auto "
            f"Loader's cleanSource DELETE (got {retention!r})"
        )


def _validate_eventhub(eventhub: EventHubConfig) -> None:
    # The value is never echoed: someone may have pasted the connection string itself here.
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", eventhub.connection_string_env):
        raise ConfigError(
            "config key 'eventhub.connection_string_env' must be the NAME of an environment "
            "variable (e.g. EVENTHUB_CONNECTION_STR), never the connection string itself"
        )
    namespace = eventhub.fully_qualified_namespace
    if namespace is not None and not re.fullmatch(r"[A-Za-z0-9.\-]+(:[0-9]+)?", namespace):
        raise ConfigError(
            "config key 'eventhub.fully_qualified_namespace' must be a host name such as "
            "<namespace>.servicebus.windows.net"
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]*", eventhub.name):
        raise ConfigError("config key 'eventhub.name' must be an event hub name")
    for name in ("publish_timeout_s", "retry_interval_s"):
        if getattr(eventhub, name) <= 0:
            raise ConfigError(f"config key 'eventhub.{name}' must be positive")


def _validate_maintenance(maintenance: MaintenanceConfig) -> None:
    for name in ("every_batches", "every_minutes", "target_file_size_mb", "checkpoint_interval"):
        if getattr(maintenance, name) <= 0:
            raise ConfigError(f"config key 'maintenance.{name}' must be positive")
    for name in ("vacuum_retention_hours", "log_retention_hours", "full_vacuum_every"):
        if getattr(maintenance, name) < 0:
            raise ConfigError(f"config key 'maintenance.{name}' must be at least 0")
    if maintenance.log_retention_hours < maintenance.vacuum_retention_hours + TOMBSTONE_GRACE_HOURS:
        # Delta refuses a log shorter than delta.deletedFileRetentionDuration (a removed file
        # would outlive the log entry that removed it), which is the vacuum retention plus
        # TOMBSTONE_GRACE_HOURS.
        raise ConfigError(
            "config key 'maintenance.log_retention_hours' must be at least "
            f"'maintenance.vacuum_retention_hours' + {TOMBSTONE_GRACE_HOURS:g}"
        )


def _validate_health(health: HealthConfig) -> None:
    for name in ("max_upload_wait_s", "max_batch_gap_s"):
        if getattr(health, name) <= 0:
            raise ConfigError(f"config key 'health.{name}' must be positive")
    if not _is_interval(health.window):
        raise ConfigError(
            f"config key 'health.window' must look like '1 hour' or '30 minutes' "
            f"(got {health.window!r})"
        )
    for name in ("min_photos", "min_week_photos"):
        if getattr(health, name) < 1:
            raise ConfigError(f"config key 'health.{name}' must be at least 1")
    for name in ("max_unknown_share", "max_quarantine_share", "max_confidence_drift"):
        if not 0.0 < getattr(health, name) <= 1.0:
            raise ConfigError(f"config key 'health.{name}' must be in (0, 1]")
    if health.max_answer_drift is not None and not 0.0 < health.max_answer_drift <= 1.0:
        raise ConfigError("config key 'health.max_answer_drift' must be null or in (0, 1]")
    if health.unknown_vs_last_week < 1.0:
        # below 1, a share equal to last week's would fail
        raise ConfigError("config key 'health.unknown_vs_last_week' must be at least 1")


def _validate_dashboard(dashboard: DashboardConfig) -> None:
    if not re.fullmatch(r"[A-Za-z0-9.:\-]+", dashboard.host):
        raise ConfigError(
            "config key 'dashboard.host' must be a host name or an address such as 127.0.0.1 "
            f"(got {dashboard.host!r})"
        )
    if not 1 <= dashboard.port <= 65535:
        raise ConfigError("config key 'dashboard.port' must be a port number from 1 to 65535")
    if dashboard.refresh_s < 0.5:
        # each refresh reads the window's rows: faster than this only loads the machine
        raise ConfigError("config key 'dashboard.refresh_s' must be at least 0.5")
    if not 0.0 < dashboard.window_hours <= 168.0:
        raise ConfigError("config key 'dashboard.window_hours' must be in (0, 168]")


_UNIT_SECONDS = {
    "millisecond": 0.001,
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": 86400.0,
}


def interval_seconds(text: str) -> float:
    """``"500 milliseconds"``, ``"2 seconds"``, ``"7 days"`` -> seconds; ValueError otherwise."""
    parts = text.split()
    if len(parts) != 2 or not parts[0].replace(".", "", 1).isdigit():
        raise ValueError(text)
    unit = parts[1].removesuffix("s")
    if unit not in _UNIT_SECONDS:
        raise ValueError(text)
    return float(parts[0]) * _UNIT_SECONDS[unit]


def _is_interval(text: str) -> bool:
    try:
        interval_seconds(text)
    except ValueError:
        return False
    return True


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
