"""The model a long-running job serves, hot-swapped when the registry's ``champion`` moves.

:meth:`ServedModel.refresh` costs one registry query (the alias) when nothing changed, so the
stream calls it before every micro-batch; only a new version's files are read. A version that
fails to load (or needs features from other weights) is logged once and the previous version
keeps serving; so does a registry that cannot be read or an alias that was removed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from fruits.config import Config
from fruits.errors import FruitsError, ModelNotFoundError, RegistryError
from fruits.features.featurizer import ExtractorSpec, featurize_udf
from fruits.model.classifier import FruitModel
from fruits.model.registry import ModelRegistry
from fruits.model.scoring import LinearScorer, predict_udf

__all__ = ["ServedModel", "Serving"]


@dataclass(frozen=True)
class Serving:
    """What one micro-batch uses: a version, its model and the matching feature extractor."""

    version: int
    # Spark ML's model, loaded only for a model that is not linear (the trees).
    model: FruitModel | None
    spec: ExtractorSpec
    # The model as one numpy map, scored inside the featurizer's UDF; None: Spark ML scores it.
    scorer: LinearScorer | None = None

    @cached_property
    def udf(self) -> Any:
        """The pandas UDF a micro-batch runs on the photos' bytes: features and answers for a
        linear model, features only for the others. Built once per version: a UDF is pickled
        with its closure (the scorer and unknown detector, megabytes) when first used, and
        PySpark broadcasts a command that large, so one built per micro-batch re-pickled and
        re-broadcast it every batch."""
        if self.scorer is not None:
            return predict_udf(self.spec, self.scorer)
        return featurize_udf(self.spec)


class ServedModel:
    def __init__(self, config: Config, *, log: Callable[[str], None]) -> None:
        self._config = config
        self._registry = ModelRegistry(config)
        self._log = log
        self._serving: Serving | None = None
        self._failed: int | None = None  # the promoted version that failed, not retried

    def __getstate__(self) -> dict[str, object]:
        """Pickled with the stream's step for Spark Connect, whose ``foreachBatch`` runs in a
        Python process beside the server: the model is loaded again there, from the registry
        (a loaded model holds the client's Spark objects)."""
        return {**self.__dict__, "_serving": None, "_failed": None}

    @property
    def current(self) -> Serving:
        if self._serving is None:
            return self.refresh()
        return self._serving

    def refresh(self) -> Serving:
        """The serving model after checking the registry; raises only if none ever loaded."""
        try:
            promoted = self._registry.champion()
        except RegistryError as exc:
            promoted = None
            self._warn_once(-1, f"registry unreadable ({exc})")
        if promoted is None:
            if self._serving is None:
                raise ModelNotFoundError(
                    f"no version of {self._registry} is 'champion': run 'fruits train' first"
                )
            return self._serving
        if self._serving is not None and promoted in (self._serving.version, self._failed):
            return self._serving
        try:
            serving = self._load(promoted)
        except FruitsError as exc:
            if self._serving is None:
                raise
            self._warn_once(promoted, str(exc))
            return self._serving
        if self._serving is not None:
            self._log(f"model hot-swap: v{self._serving.version} -> v{promoted}")
        self._serving, self._failed = serving, None
        return serving

    def _load(self, version: int) -> Serving:
        files = self._registry.files(version)
        spec = ExtractorSpec.for_model(self._config, files.meta)
        if spec.extractor_id != files.meta["extractor"]:
            raise RegistryError(
                f"model version {version} needs features {files.meta['extractor']}, but the "
                f"configured weights give {spec.extractor_id}"
            )
        scorer = files.scorer()
        return Serving(version, None if scorer is not None else files.model(), spec, scorer)

    def _warn_once(self, version: int, reason: str) -> None:
        if self._failed != version:
            self._failed = version
            serving = f"v{self._serving.version}" if self._serving else "nothing"
            self._log(f"model version {version} not used: {reason}; still serving {serving}")
