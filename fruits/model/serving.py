"""The model a long-running job serves, hot-swapped when the registry's ``champion`` moves.

:meth:`ServedModel.refresh` costs one registry query (the alias) when nothing changed, so the
stream calls it before every micro-batch; only a new version's files are read. A version that
fails to load, whatever the error (files missing, a corrupt ``scorer.npz``, features from other
weights, a failed download), is logged in one line and tried again ``mlflow.retry_interval_s``
later; meanwhile the previous version keeps serving, as it does when the registry cannot be read
or the alias was removed. With nothing served yet (a start, a cluster replacement), a champion
that does not load is replaced by the newest older version that does; when none loads,
:meth:`ServedModel.wait` retries, logged, at a bounded interval: never a crash loop.
"""

from __future__ import annotations

import time
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
        # A version that failed to load is tried again this long after: a download that failed
        # (storage or registry hiccup) or files repaired in place become usable without a
        # restart, while a version that stays broken costs one attempt and one log line per
        # interval, not one per micro-batch.
        self._retry_s = max(0.0, float(config.mlflow.retry_interval_s))
        self._serving: Serving | None = None
        self._failed: dict[int, float] = {}  # version -> monotonic time it may be tried again
        self._registry_down = False

    def __getstate__(self) -> dict[str, object]:
        """Pickled with the stream's step for Spark Connect, whose ``foreachBatch`` runs in a
        Python process beside the server: the model is loaded again there, from the registry
        (a loaded model holds the client's Spark objects)."""
        return {**self.__dict__, "_serving": None, "_failed": {}, "_registry_down": False}

    @property
    def current(self) -> Serving:
        if self._serving is None:
            return self.refresh()
        return self._serving

    def refresh(self) -> Serving:
        """The serving model after checking the registry. With nothing served yet, a champion
        that does not load gives way to the newest older version that does; raises (a
        FruitsError) only when nothing is served and nothing loads."""
        try:
            promoted = self._registry.champion()
        except RegistryError as exc:
            if self._serving is None:
                raise
            if not self._registry_down:
                self._log(f"registry unreadable ({exc}); still serving v{self._serving.version}")
            self._registry_down = True
            return self._serving
        self._registry_down = False
        serving = self._serving
        if promoted is None:
            if serving is None:
                raise ModelNotFoundError(
                    f"no version of {self._registry} is 'champion': run 'fruits train' first"
                )
            return serving
        if serving is not None and promoted == serving.version:
            return serving
        loaded = self._try(promoted, "'champion'")
        if loaded is not None:
            if serving is not None:
                self._log(f"model hot-swap: v{serving.version} -> v{promoted}")
            self._serving = loaded
            return loaded
        if serving is not None:
            return serving
        return self._fall_back(promoted)

    def wait(self, *, first_delay_s: float = 5.0) -> Serving:
        """The model to start with, waiting while there is none: no champion yet, a registry
        that cannot be read, or no version that loads. Each failed attempt is logged; the
        wait between attempts doubles from ``first_delay_s`` up to ``mlflow.retry_interval_s``
        (bounded, so a fix is picked up within that long). Every version is tried again at each
        attempt (nothing is served meanwhile, so nothing is spared by skipping one)."""
        delay = min(first_delay_s, self._retry_s)
        while True:
            try:
                return self.refresh()
            except FruitsError as exc:
                self._log(f"no model to serve: {exc}; trying again in {delay:g} s")
            time.sleep(delay)
            self._failed.clear()
            delay = min(delay * 2, self._retry_s)

    def _fall_back(self, champion: int) -> Serving:
        """At start, when ``champion`` does not load: the newest version older than it that
        does. Older only: a newer version was never promoted (``fruits train --no-promote``)
        or was rolled back from, while an older one is most likely a former champion."""
        older = sorted(v.version for v in self._registry.versions() if v.version < champion)
        for version in reversed(older):
            loaded = self._try(version, "older than 'champion'")
            if loaded is not None:
                self._log(
                    f"serving model version {version}, the newest older version that loads, "
                    f"until version {champion} ('champion') does"
                )
                self._serving = loaded
                return loaded
        raise ModelNotFoundError(
            f"no version of {self._registry} loads: not version {champion} ('champion')"
            + (f", nor the {len(older)} older ones" if older else ", and there is no older one")
        )

    def _try(self, version: int, role: str) -> Serving | None:
        """The version loaded, or None: it failed now (logged in one line, retried after the
        interval) or failed less than an interval ago (skipped, not logged again)."""
        if time.monotonic() < self._failed.get(version, 0.0):
            return None
        try:
            loaded = self._load(version)
        except Exception as exc:  # any load error; KeyboardInterrupt and SystemExit go through
            self._registry.forget(version)  # the next attempt downloads it again
            self._failed[version] = time.monotonic() + self._retry_s
            reason = str(exc) if isinstance(exc, FruitsError) else _described(exc)
            serving = f"still serving v{self._serving.version}" if self._serving else "none served"
            self._log(
                f"model version {version} ({role}) does not load: {reason}; {serving}; "
                f"tried again in {self._retry_s:g} s"
            )
            return None
        self._failed.pop(version, None)
        return loaded

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


def _described(exc: BaseException) -> str:
    """An unexpected error in one line: its type (a corrupt file's BadZipFile, KeyError...)
    and its message."""
    message = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
