"""The model registry is MLflow's: one registered model, versions, and the ``champion`` alias.

* A version is a pyfunc (:mod:`fruits.model.pyfunc`) logged in an MLflow run and registered as
  ``mlflow.model_name``; its artifacts carry everything needed to answer a photo (the ONNX
  featurizer, the folded linear scorer or the Spark ML pipeline; :func:`write_model_files`).
* Promotion is the alias: :meth:`ModelRegistry.promote` points ``champion`` at a version (one
  registry write, atomic); rollback is pointing it back. :meth:`ModelRegistry.champion` is one
  small query, cheap enough to run before every micro-batch.
* The local default is MLflow's SQLite store under the root (no server); on Databricks the
  workspace and Unity Catalog (``conf/databricks.yaml``).

Each version carries tags with what ``fruits models`` lists (classifier, extractor, accuracy per
split), so listing never downloads a model.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fruits.config import Config
from fruits.errors import ModelNotFoundError, RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from fruits.features.featurizer import ExtractorSpec
    from fruits.model.classifier import FruitModel
    from fruits.model.scoring import LinearScorer
    from fruits.model.unknown import UnknownDetector

__all__ = ["CHAMPION", "ModelFiles", "ModelRegistry", "ModelVersion", "write_model_files"]

CHAMPION = "champion"
# The pyfunc's artifact key: its files sit under <model>/artifacts/fruits/.
ARTIFACT_KEY = "fruits"
# Model version tags shown by `fruits models` (and searchable in MLflow's UI).
_TAGGED = (
    "classifier",
    "extractor",
    "image_size",
    "layer",
    "pca_components",
    "explained_variance",
    "accuracy_train",
    "accuracy_validation",
    "accuracy_test",
)


@dataclass(frozen=True)
class ModelVersion:
    version: int
    run_id: str | None
    tags: dict[str, str]
    aliases: tuple[str, ...]
    created_ms: int

    @property
    def metrics(self) -> dict[str, float | None]:
        return {
            split: float(self.tags[f"accuracy_{split}"])
            if self.tags.get(f"accuracy_{split}") not in (None, "", "None")
            else None
            for split in ("train", "validation", "test")
        }


@dataclass(frozen=True)
class ModelFiles:
    """A version's files on this machine: ``meta`` (model.json) and the folder holding them."""

    version: int
    folder: Path
    meta: dict[str, Any]

    def scorer(self) -> LinearScorer | None:
        """The folded linear model (``scorer.npz``); None for a model only Spark ML scores."""
        from fruits.model.scoring import LinearScorer

        path = self.folder / "scorer.npz"
        if not path.is_file():
            return None
        import numpy as np

        with np.load(path) as arrays:
            weights, bias = arrays["weights"], arrays["bias"]
        return LinearScorer(
            weights=weights,
            bias=bias,
            classes=tuple(self.meta["classes"]),
            threshold=float(self.meta["threshold"]),
            top_k=int(self.meta["top_k"]),
            detector=self.detector(),
            kinds=tuple(self.meta.get("kinds") or ()),  # none before kinds: the taxonomy's
            variety_thresholds=self._variety_thresholds,
        )

    @property
    def _variety_thresholds(self) -> tuple[float, ...]:
        """Each class's variety threshold; none in a version trained before them."""
        return tuple(float(t) for t in self.meta.get("variety_thresholds") or ())

    def detector(self) -> UnknownDetector | None:
        """The distance detector (``detector.npz``); None for a version without one."""
        from fruits.model.unknown import UnknownDetector

        path = self.folder / "detector.npz"
        return UnknownDetector.load(path) if path.is_file() else None

    def model(self) -> FruitModel:
        """The Spark ML model (needs a SparkSession)."""
        from pyspark.ml import PipelineModel

        from fruits.model.classifier import FruitModel

        try:
            pipeline = PipelineModel.load((self.folder / "pipeline").resolve().as_uri())
        except Exception as exc:
            reason = " ".join(str(exc).split())[:200]
            raise RegistryError(
                f"model version {self.version} cannot be loaded: {reason}"
            ) from None
        return FruitModel(
            pipeline=pipeline,
            classes=tuple(self.meta["classes"]),
            threshold=float(self.meta["threshold"]),
            extractor=str(self.meta["extractor"]),
            top_k=int(self.meta["top_k"]),
            detector=self.detector(),
            kinds=tuple(self.meta.get("kinds") or ()),  # none before kinds: the taxonomy's
            variety_thresholds=self._variety_thresholds,
        )


def write_model_files(folder: Path, model: FruitModel, spec: ExtractorSpec) -> dict[str, Any]:
    """The pyfunc's artifact layout, written into ``folder``; returns ``model.json``'s content.

    ``model.json``       classes, their kinds and variety thresholds, threshold, top_k, the
                         extractor (id, layer,
                         input size, weights digest, ONNX file name) and the image limits
    ``<name>.onnx``      the featurizer (InceptionV3 to ``layer``, pooled), ONNX Runtime's input
    ``scorer.npz``       standardise + PCA + logistic regression folded into one affine map
    ``pipeline/``        the Spark ML PipelineModel (trees are scored with it; batch evaluation)
    ``detector.npz``     the "unknown" detector: features -> the leading directions, the
                         training photos' points there and their classes, k, the threshold
                         and, fused, the validation photos' scores (when it has one)
    """
    import dataclasses

    import numpy as np

    from fruits.features.featurizer import export_onnx

    folder.mkdir(parents=True, exist_ok=True)
    onnx_file = Path(export_onnx(dataclasses.replace(spec, backend="onnx")))
    shutil.copyfile(onnx_file, folder / onnx_file.name)
    scorer = model.linear_scorer()
    if scorer is not None:
        np.savez(folder / "scorer.npz", weights=scorer.weights, bias=scorer.bias)
    # A file: URI, so Spark writes to this local folder whatever its default filesystem is.
    model.pipeline.save((folder / "pipeline").resolve().as_uri())
    if model.detector is not None:
        model.detector.save(folder / "detector.npz")
    meta = {
        "classes": list(model.classes),
        "kinds": list(model.rule.kinds),
        "variety_thresholds": list(model.variety_thresholds),
        "threshold": model.threshold,
        "top_k": model.top_k,
        **spec.identity,  # extractor, backbone, layer, image_size, centre_crop
        "extractor": model.extractor,
        "weights_digest": spec.weights_digest,
        "onnx_file": onnx_file.name,
        "max_bytes": spec.max_bytes,
        "max_pixels": spec.max_pixels,
        "scorer": "linear" if scorer is not None else "spark_ml",
        "unknown_distance": model.detector.threshold if model.detector is not None else None,
    }
    (folder / "model.json").write_text(json.dumps(meta, indent=2))
    return meta


class ModelRegistry:
    """The registered model ``mlflow.model_name`` in the configured MLflow registry."""

    def __init__(self, config: Config) -> None:
        self.tracking_uri = str(config.mlflow_uri("tracking_uri"))
        self.registry_uri = config.mlflow_uri("registry_uri") or self.tracking_uri
        self.name = config.mlflow.model_name
        self.experiment = config.mlflow.experiment
        self.artifact_location = config.mlflow_uri("artifact_location")
        self._client: MlflowClient | None = None
        self._files: dict[int, ModelFiles] = {}
        self._reports: dict[int, dict[str, Any] | None] = {}

    def __repr__(self) -> str:
        return f"model '{self.name}' in {self.registry_uri}"

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.registry_uri
            )
        return self._client

    # -- runs and writing ----------------------------------------------------------------
    def use(self) -> str:
        """Point the fluent MLflow API (``mlflow.start_run``, ``log_*``) at this store and
        experiment (created with ``artifact_location`` when new); returns its id."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            experiment_id = str(experiment.experiment_id)
        else:
            try:
                experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=self._artifact_uri()
                )
            except Exception:  # created meanwhile by another process
                again = self.client.get_experiment_by_name(self.experiment)
                if again is None:
                    raise
                experiment_id = str(again.experiment_id)
        mlflow.set_experiment(experiment_id=experiment_id)
        return experiment_id

    @contextmanager
    def run(self, name: str | None = None) -> Iterator[str]:
        """The active MLflow run, or a new one for the duration; yields its id."""
        import mlflow

        self.use()
        active = mlflow.active_run()
        if active is not None:
            yield active.info.run_id
            return
        with mlflow.start_run(run_name=name) as started:
            yield started.info.run_id

    def register(
        self,
        model: FruitModel,
        spec: ExtractorSpec,
        *,
        tags: dict[str, Any] | None = None,
        example: bytes | None = None,
    ) -> ModelVersion:
        """Log ``model`` as a pyfunc in the active run (or a new one) and register it as the
        next version, not promoted. ``example``: one photo's bytes, the input example."""
        import mlflow

        from fruits.model.pyfunc import log_pyfunc

        with self.run("register") as run_id, tempfile.TemporaryDirectory() as staging:
            meta = write_model_files(Path(staging) / ARTIFACT_KEY, model, spec)
            info = log_pyfunc(Path(staging) / ARTIFACT_KEY, example=example)
            version_tags = {
                "extractor": meta["extractor"],
                "image_size": meta["image_size"],
                "layer": meta["layer"],
                **(tags or {}),
            }
            registered = mlflow.register_model(
                info.model_uri,
                self.name,
                tags={k: str(v) for k, v in version_tags.items() if k in _TAGGED},
            )
        version = int(registered.version)
        return ModelVersion(version, run_id, dict(registered.tags or {}), (), 0)

    def promote(self, version: int) -> int | None:
        """Point ``champion`` at ``version`` (rollback = an older one); returns the previous."""
        previous = self.champion()
        self._require(version)
        self.client.set_registered_model_alias(self.name, CHAMPION, str(version))
        return previous

    # -- reading -------------------------------------------------------------------------
    def champion(self) -> int | None:
        """The version ``champion`` points at, or None: one query, or none at all when the local
        store does not exist yet (a reader never creates it)."""
        if not self._store_exists():
            return None
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_model_version_by_alias(self.name, CHAMPION)
        except MlflowException as exc:
            if _not_found(exc):
                return None
            raise RegistryError(f"{self} is unreadable: {_one_line(exc)}") from None
        return int(found.version)

    def versions(self) -> list[ModelVersion]:
        """All versions, oldest first, with their tags and aliases."""
        if not self._store_exists():
            return []
        from mlflow.exceptions import MlflowException

        try:
            aliases = self.client.get_registered_model(self.name).aliases
            found = self.client.search_model_versions(f"name = '{self.name}'")
        except MlflowException as exc:
            if _not_found(exc):
                return []
            raise RegistryError(f"{self} is unreadable: {_one_line(exc)}") from None
        by_version: dict[int, list[str]] = {}
        for alias, version in (aliases or {}).items():
            by_version.setdefault(int(version), []).append(alias)
        return sorted(
            (
                ModelVersion(
                    int(v.version),
                    v.run_id,
                    dict(v.tags or {}),
                    tuple(sorted(by_version.get(int(v.version), []))),
                    int(v.creation_timestamp or 0),
                )
                for v in found
            ),
            key=lambda v: v.version,
        )

    def files(self, version: int | None = None) -> ModelFiles:
        """A version's files (``champion`` by default), on this machine: downloaded once per
        process through ``models:/<name>/<version>``, from every registry alike (Unity
        Catalog hands out the storage credentials for such a download; the version's raw
        storage URI needs credentials of its own). Into a folder of this process, which a
        concurrent change of the store cannot tear, and :meth:`forget` removes."""
        if version is None:
            version = self.champion()
            if version is None:
                raise ModelNotFoundError(
                    f"no version of {self} is '{CHAMPION}' yet: run 'fruits train' first"
                )
        if version in self._files:
            return self._files[version]
        folder = self._download(version)
        try:
            meta = json.loads((folder / "model.json").read_text())
        except (OSError, ValueError) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise RegistryError(
                f"model version {version} cannot be loaded: {_one_line(exc)}"
            ) from None
        files = ModelFiles(version, folder, meta)
        self._files[version] = files
        return files

    def forget(self, version: int) -> None:
        """Drop a version's downloaded files, so the next :meth:`files` downloads them again
        (a version that failed to load is retried from the store, not from this copy)."""
        files = self._files.pop(version, None)
        if files is not None:
            shutil.rmtree(files.folder, ignore_errors=True)

    def training_report(self, version: int) -> dict[str, Any] | None:
        """The ``metrics.json`` of the training run that registered ``version`` (its report),
        cached per process; None when the version, its run or the report does not exist (a
        version registered by hand, or by a release before the report had it)."""
        if version in self._reports:
            return self._reports[version]
        found = next((v for v in self.versions() if v.version == version), None)
        report = None
        if found is not None and found.run_id:
            from mlflow.artifacts import download_artifacts

            try:
                with tempfile.TemporaryDirectory() as target:
                    path = download_artifacts(
                        run_id=found.run_id,
                        artifact_path="report/metrics.json",
                        dst_path=target,
                        tracking_uri=self.tracking_uri,
                    )
                    report = json.loads(Path(path).read_text())
            except Exception:  # no such artifact, or the store's client refused: no report
                report = None
        self._reports[version] = report
        return report

    def load(self, version: int | None = None) -> tuple[ModelFiles, FruitModel]:
        """A version's files and its Spark ML model, ready to predict (needs a SparkSession)."""
        files = self.files(version)
        return files, files.model()

    # -- helpers -------------------------------------------------------------------------
    def _require(self, version: int) -> str:
        """The version's artifact URI; ModelNotFoundError when it does not exist."""
        from mlflow.exceptions import MlflowException

        if not self._store_exists():
            raise ModelNotFoundError(f"model version {version} does not exist: {self} is empty")
        try:
            return str(self.client.get_model_version_download_uri(self.name, str(version)))
        except MlflowException as exc:
            if _not_found(exc):
                raise ModelNotFoundError(
                    f"model version {version} does not exist in {self}"
                ) from None
            raise RegistryError(f"{self} is unreadable: {_one_line(exc)}") from None

    def _download(self, version: int) -> Path:
        """The version's ``fruits`` artifact folder, downloaded into a new folder of this
        process (removed at exit)."""
        import mlflow
        from mlflow.artifacts import download_artifacts

        self._require(version)  # a clear ModelNotFoundError for a version that does not exist
        uri = f"models:/{self.name}/{version}/artifacts/{ARTIFACT_KEY}"
        # MLflow resolves a models:/ URI of a workspace or local registry with the process'
        # registry URI, not the one passed here (ModelsArtifactRepository._get_model_uri_infos).
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)
        target = tempfile.mkdtemp(prefix=f"fruits-model-v{version}-")
        atexit.register(shutil.rmtree, target, True)
        try:
            folder = Path(
                download_artifacts(
                    artifact_uri=uri,
                    dst_path=target,
                    tracking_uri=self.tracking_uri,
                    registry_uri=self.registry_uri,
                )
            )
        except Exception as exc:  # whatever the store's client raises
            shutil.rmtree(target, ignore_errors=True)
            raise RegistryError(
                f"model version {version} files at {uri} cannot be read: {_one_line(exc)}"
            ) from None
        if not folder.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            raise RegistryError(f"model version {version} files not found at {uri}")
        return folder

    def _store_exists(self) -> bool:
        local = _sqlite_file(self.registry_uri)
        return local is None or local.is_file()

    def _artifact_uri(self) -> str | None:
        location = self.artifact_location
        if location is None or "://" in location or location.startswith("dbfs:"):
            return location
        return Path(location).resolve().as_uri()


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def _not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
