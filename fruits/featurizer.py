"""InceptionV3 transfer-learning features, on plain arrays and as a Spark pandas UDF.

The Keras model is built once per Python worker process (module-level cache) and reused by
every Arrow batch that worker sees; Spark's worker reuse keeps the process alive between tasks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fruits.config import Config
from fruits.images import Decoded, ImageLimits, decode_batch, preprocess_input

__all__ = [
    "FEATURE_DIM",
    "FEATURE_RESULT_SCHEMA",
    "ExtractorSpec",
    "extract_features",
    "featurize_udf",
]

FEATURE_DIM = 2048
# The UDF's result: features for a usable photo, or a quarantine reason and detail.
FEATURE_RESULT_SCHEMA = "features array<float>, reason string, detail string"


@dataclass(frozen=True)
class ExtractorSpec:
    """Everything that decides the features' values; picklable, shipped to Spark workers."""

    weights: str
    image_size: int
    weights_digest: str
    intra_op_threads: int = 1
    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000

    @classmethod
    def from_config(cls, config: Config, *, image_size: int | None = None) -> ExtractorSpec:
        """The configured extractor; ``image_size`` overrides it (to match a trained model)."""
        return cls(
            weights=config.featurizer.weights,
            image_size=image_size or config.featurizer.image_size,
            weights_digest=weights_digest(config.featurizer.weights),
            intra_op_threads=config.featurizer.intra_op_threads,
            max_bytes=config.images.max_bytes,
            max_pixels=config.images.max_pixels,
        )

    @property
    def extractor_id(self) -> str:
        """Names backbone, pooling, input size and weights, so a cache hit is the same model."""
        return f"inception_v3/avg/{self.image_size}/{self.weights_digest}"

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_bytes, max_pixels=self.max_pixels)


def weights_digest(weights: str) -> str:
    """``imagenet`` or the first 16 hex digits of the weights file's sha256."""
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights)
    stat = path.stat()
    return _file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return f"sha256:{sha.hexdigest()[:16]}"


@lru_cache(maxsize=2)
def _model(weights: str, image_size: int, intra_op_threads: int) -> Any:
    """Build InceptionV3 once per process (~5 s: TF import + graph + weights)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if intra_op_threads > 0:
        # One inference thread per Spark worker: local[N] already runs N workers side by side.
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from keras.applications import InceptionV3

    return InceptionV3(
        include_top=False,
        weights=weights,
        pooling="avg",
        input_shape=(image_size, image_size, 3),
    )


def extract_features(pixels: np.ndarray, spec: ExtractorSpec) -> np.ndarray:
    """(N, size, size, 3) RGB 0..255 -> (N, 2048) float32 features."""
    if len(pixels) == 0:
        return np.zeros((0, FEATURE_DIM), dtype=np.float32)
    model = _model(spec.weights, spec.image_size, spec.intra_op_threads)
    out = model(preprocess_input(pixels), training=False)
    return np.asarray(out, dtype=np.float32)


def featurize_frame(contents: pd.Series, spec: ExtractorSpec) -> pd.DataFrame:
    """One Arrow batch: photo bytes -> (features | None, reason | None, detail | None)."""
    pixels, results = decode_batch(list(contents), size=spec.image_size, limits=spec.limits)
    vectors = iter(extract_features(pixels, spec))
    features: list[np.ndarray | None] = []
    reasons: list[str | None] = []
    details: list[str | None] = []
    for result in results:
        if isinstance(result, Decoded):
            features.append(next(vectors))
            reasons.append(None)
            details.append(None)
        else:
            features.append(None)
            reasons.append(result.reason)
            details.append(result.detail)
    return pd.DataFrame({"features": features, "reason": reasons, "detail": details})


def featurize_udf(spec: ExtractorSpec) -> Any:
    """A Spark iterator pandas UDF: ``content`` (binary) -> struct(features, reason, detail)."""
    from pyspark.sql.pandas.functions import pandas_udf

    @pandas_udf(FEATURE_RESULT_SCHEMA)  # type: ignore[call-overload, untyped-decorator]
    def featurize(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        for contents in batches:
            yield featurize_frame(contents, spec)

    return featurize
