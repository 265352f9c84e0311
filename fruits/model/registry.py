"""A versioned model registry in a folder: the simplest thing that keeps the properties we need.

Layout under ``paths.models``::

    versions/v0001/model.json     classes, extractor, threshold, metrics, created_at
    versions/v0001/pipeline/      the Spark ML PipelineModel (scaler, PCA, classifier)
    versions/v0001/report/        the training report (markdown, JSON, PNG plots)
    CURRENT                       the promoted version number

* A version is written into a hidden staging folder and renamed into place, so a reader never
  sees half a version; version numbers come from that rename, so two trainings cannot collide.
* Promotion rewrites ``CURRENT`` through a temporary file and ``os.replace`` (atomic); rollback is
  promoting an older version.

Why not MLflow: it is the habit on Databricks (and this layout maps onto it one to one), but it
adds a tracking server or workspace to every local run and test; a folder works everywhere the
jobs run and is trivially inspectable.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fruits.errors import ModelNotFoundError, RegistryError

if TYPE_CHECKING:
    from fruits.model.classifier import FruitModel

__all__ = ["ModelRegistry", "ModelVersion"]


@dataclass(frozen=True)
class ModelVersion:
    version: int
    path: Path
    meta: dict[str, Any]

    @property
    def report_dir(self) -> Path:
        return self.path / "report"


class ModelRegistry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"

    # -- writing -------------------------------------------------------------------------
    def register(
        self,
        model: FruitModel,
        meta: dict[str, Any],
        *,
        write_extras: Callable[[Path], None] | None = None,
    ) -> ModelVersion:
        """Store ``model`` as the next version (not promoted). ``write_extras(folder)`` may add
        files (the report) before the version becomes visible."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = self.versions_dir / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            # A file: URI, so Spark writes to this local (or FUSE-mounted) folder, whatever its
            # default filesystem is (DBFS on Databricks).
            model.pipeline.save((staging / "pipeline").resolve().as_uri())
            if write_extras is not None:
                write_extras(staging)
            while True:
                version = self._latest_number() + 1
                full_meta = {
                    **meta,
                    "version": version,
                    "classes": list(model.classes),
                    "threshold": model.threshold,
                    "extractor": model.extractor,
                    "top_k": model.top_k,
                    "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                }
                (staging / "model.json").write_text(json.dumps(full_meta, indent=2))
                target = self._version_dir(version)
                try:
                    # rename() of a folder onto a missing name is atomic; if another training
                    # took this number first, try the next one.
                    os.rename(staging, target)
                except OSError:
                    if target.exists():
                        continue
                    raise
                return ModelVersion(version, target, full_meta)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def promote(self, version: int) -> None:
        """Make ``version`` the current one, atomically (rollback = promote an older one)."""
        if not (self._version_dir(version) / "model.json").is_file():
            raise ModelNotFoundError(f"model version {version} does not exist in {self.root}")
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".CURRENT-")
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{version}\n")
        os.replace(tmp, self.root / "CURRENT")

    # -- reading -------------------------------------------------------------------------
    def current_version(self) -> int | None:
        try:
            text = (self.root / "CURRENT").read_text().strip()
        except FileNotFoundError:
            return None
        try:
            return int(text)
        except ValueError:
            raise RegistryError(f"{self.root / 'CURRENT'} is corrupt: {text[:40]!r}") from None

    def versions(self) -> list[int]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(
            int(p.name[1:])
            for p in self.versions_dir.iterdir()
            if p.name.startswith("v") and p.name[1:].isdigit()
        )

    def get(self, version: int | None = None) -> ModelVersion:
        """A version's metadata (the current one by default)."""
        if version is None:
            version = self.current_version()
            if version is None:
                raise ModelNotFoundError(
                    f"no model is promoted yet in {self.root}: run 'fruits train' first"
                )
        path = self._version_dir(version)
        try:
            meta = json.loads((path / "model.json").read_text())
        except FileNotFoundError:
            raise ModelNotFoundError(
                f"model version {version} does not exist in {self.root}"
            ) from None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"model version {version} is unreadable: {exc}") from None
        return ModelVersion(version, path, meta)

    def load(self, version: int | None = None) -> tuple[ModelVersion, FruitModel]:
        """The version's metadata and its model, ready to predict (needs a SparkSession)."""
        from pyspark.ml import PipelineModel

        from fruits.model.classifier import FruitModel

        entry = self.get(version)
        try:
            pipeline = PipelineModel.load((entry.path / "pipeline").resolve().as_uri())
        except Exception as exc:
            reason = " ".join(str(exc).split())[:200]
            message = f"model version {entry.version} cannot be loaded: {reason}"
            raise RegistryError(message) from None
        meta = entry.meta
        model = FruitModel(
            pipeline=pipeline,
            classes=tuple(meta["classes"]),
            threshold=float(meta["threshold"]),
            extractor=str(meta["extractor"]),
            top_k=int(meta.get("top_k", 3)),
        )
        return entry, model

    def _latest_number(self) -> int:
        versions = self.versions()
        return versions[-1] if versions else 0

    def _version_dir(self, version: int) -> Path:
        return self.versions_dir / f"v{version:04d}"
