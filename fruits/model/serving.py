"""The model a long-running job serves, hot-swapped when the registry promotes another.

:meth:`ServedModel.refresh` costs one small file read when nothing changed, so the stream calls
it before every micro-batch. A promoted version that fails to load (or needs features from other
weights) is logged once and the previous version keeps serving.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fruits.config import Config
from fruits.errors import FruitsError, ModelNotFoundError, RegistryError
from fruits.features.featurizer import ExtractorSpec
from fruits.model.classifier import FruitModel
from fruits.model.registry import ModelRegistry
from fruits.model.scoring import LinearScorer

__all__ = ["ServedModel", "Serving"]


@dataclass(frozen=True)
class Serving:
    """What one micro-batch uses: a version, its model and the matching feature extractor."""

    version: int
    model: FruitModel
    spec: ExtractorSpec
    # The model as one numpy map, scored inside the featurizer's UDF; None: Spark ML scores it.
    scorer: LinearScorer | None = None


class ServedModel:
    def __init__(self, config: Config, *, log: Callable[[str], None]) -> None:
        self._config = config
        self._registry = ModelRegistry(config.path("models"))
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
            promoted = self._registry.current_version()
        except RegistryError as exc:
            promoted = None
            self._warn_once(-1, f"registry unreadable ({exc})")
        if promoted is None:
            if self._serving is None:
                raise ModelNotFoundError(
                    f"no model is promoted in {self._registry.root}: run 'fruits train' first"
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
        entry, model = self._registry.load(version)
        spec = ExtractorSpec.for_model(self._config, entry.meta)
        if spec.extractor_id != model.extractor:
            raise RegistryError(
                f"model version {version} needs features {model.extractor}, but the configured "
                f"weights give {spec.extractor_id}"
            )
        return Serving(version, model, spec, model.linear_scorer())

    def _warn_once(self, version: int, reason: str) -> None:
        if self._failed != version:
            self._failed = version
            serving = f"v{self._serving.version}" if self._serving else "nothing"
            self._log(f"model version {version} not used: {reason}; still serving {serving}")
