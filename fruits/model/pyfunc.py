"""The model as an MLflow pyfunc: photo bytes in, the stream's answer out.

What other teams call: ``mlflow.pyfunc.load_model("models:/fruits@champion")``,
``mlflow.pyfunc.spark_udf(spark, "models:/fruits@champion")``, or ``mlflow models serve``
(a REST endpoint: POST ``/invocations`` with ``{"dataframe_split": {"columns": ["content"],
"data": [["<base64 photo>"]]}}``).

* Input: a DataFrame with one binary column ``content``, the photo's bytes (base64 in JSON,
  in any of the scoring server's formats: ``dataframe_split``, ``dataframe_records``,
  ``inputs``).
* Output, one row per photo: ``image_id`` (sha256), the answer at both levels as the stream
  gives it (fruits/model/answers.py: ``label``, ``confidence``, ``top_k`` (list of {label,
  prob}), ``is_unknown``, ``kind``, ``kind_confidence``, ``variety_not_sure``), ``reason`` and
  ``detail``: empty for a photo, and for bytes that are not a usable photo the quarantine's
  codes (``not_an_image``, ``truncated``, ``empty``...) with ``is_unknown`` true, an empty
  ``label`` and ``kind``, no confidences and no ``top_k``. Bad bytes are an answer, never an
  error.

The model needs only its own files (``fruits.model.registry.write_model_files``): the ONNX
featurizer and the folded linear scorer are used as the stream uses them
(:func:`fruits.model.scoring.predict_frame`, the same code, so the same answers); a tree model
is scored by Spark ML in a local SparkSession (so not inside ``spark_udf`` workers).

It loads outside the project too (Model Serving, ``mlflow models serve`` with the virtualenv
environment manager, a fresh venv): the model carries the ``fruits`` package as ``code_paths``
and its requirements list what loading and answering import (:func:`requirements`), nothing of
Spark, TensorFlow or Azure unless it is a tree model (pyspark then).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd

from fruits.features.featurizer import ExtractorSpec, featurize_photos, photo_ids
from fruits.model import answers
from fruits.model.registry import ARTIFACT_KEY, ModelFiles
from fruits.model.scoring import predict_frame

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo
    from mlflow.models.signature import ModelSignature

    from fruits.model.classifier import FruitModel
    from fruits.model.scoring import LinearScorer

__all__ = ["ANSWER_COLUMNS", "FruitsPyfunc", "log_pyfunc", "requirements", "signature"]

ANSWER_COLUMNS = ("image_id", *answers.ANSWER_COLUMNS, "reason", "detail")


def signature() -> ModelSignature:
    """Input: ``content`` (binary); output: the answer columns."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Object, Property, Schema

    top_k = Array(Object([Property("label", "string"), Property("prob", "double")]))
    return ModelSignature(
        inputs=Schema([ColSpec("binary", "content")]),
        outputs=Schema(
            [
                ColSpec("string", "image_id"),
                ColSpec("string", "label"),
                ColSpec("double", "confidence", required=False),
                ColSpec(top_k, "top_k"),
                ColSpec("boolean", "is_unknown"),
                ColSpec("string", "kind"),
                ColSpec("double", "kind_confidence", required=False),
                ColSpec("boolean", "variety_not_sure"),
                ColSpec("string", "reason"),
                ColSpec("string", "detail"),
            ]
        ),
    )


class FruitsPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[misc, name-defined]
    """Loaded from the model's ``fruits`` artifact folder; holds no state of the project's."""

    def load_context(self, context: Any) -> None:
        folder = Path(context.artifacts[ARTIFACT_KEY])
        meta = json.loads((folder / "model.json").read_text())
        # The extractor of the model's own ONNX file: no weights, no config, no data root.
        self._spec = ExtractorSpec(
            weights="",
            image_size=int(meta["image_size"]),
            weights_digest=str(meta["weights_digest"]),
            layer=str(meta["layer"]),
            intra_op_threads=1,
            max_bytes=int(meta["max_bytes"]),
            max_pixels=int(meta["max_pixels"]),
            backend="onnx",
            onnx_dir=str(folder),
            backbone=meta.get("backbone", "inception_v3"),
            centre_crop=float(meta.get("centre_crop", 1.0)),
        )
        if not Path(self._spec.onnx_path).is_file():
            raise FileNotFoundError(f"the model's featurizer is missing: {self._spec.onnx_path}")
        files = ModelFiles(0, folder, meta)
        self._scorer: LinearScorer | None = files.scorer()
        self._model: FruitModel | None = None
        if self._scorer is None:  # a tree: Spark ML, in this process' (local) SparkSession
            from pyspark.sql import SparkSession

            SparkSession.builder.getOrCreate()
            self._model = files.model()

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        contents = pd.Series([_as_bytes(value) for value in model_input["content"]], dtype=object)
        if self._scorer is not None:
            frame = predict_frame(contents, self._spec, self._scorer)
        else:
            frame = self._predict_with_spark_ml(contents)
        rejected = frame["reason"].notna()
        # A photo that cannot be answered is "unknown", with no guesses: never an error.
        frame["is_unknown"] = frame["is_unknown"].where(~rejected, True).astype(bool)
        frame["variety_not_sure"] = frame["variety_not_sure"].where(~rejected, False).astype(bool)
        frame["top_k"] = [
            [] if bad else top for bad, top in zip(rejected, frame["top_k"], strict=True)
        ]
        # None, not NaN, where there is no answer: JSON has no NaN.
        for name in ("confidence", "kind_confidence"):
            values = zip(rejected, frame[name], strict=True)
            frame[name] = pd.Series([None if bad else float(v) for bad, v in values], dtype=object)
        # Text is never null but empty: spark_udf (MLflow 3.17) turns a null string in a
        # struct result into the text "None".
        for name in ("image_id", "label", "kind", "reason", "detail"):
            frame[name] = ["" if value is None else str(value) for value in frame[name]]
        return frame[list(ANSWER_COLUMNS)]

    def _predict_with_spark_ml(self, contents: pd.Series) -> pd.DataFrame:
        from fruits.decode import Rejection

        assert self._model is not None
        features, results = featurize_photos(contents, self._spec)
        usable = [i for i, r in enumerate(results) if not isinstance(r, Rejection)]
        frame = pd.DataFrame(
            {
                "image_id": photo_ids(contents),
                **{name: None for name in answers.ANSWER_COLUMNS},
                "reason": [r.reason if isinstance(r, Rejection) else None for r in results],
                "detail": [r.detail if isinstance(r, Rejection) else None for r in results],
            }
        )
        if usable:
            from pyspark.sql import SparkSession

            spark = SparkSession.builder.getOrCreate()
            rows = pd.DataFrame({"row": usable, "features": [f.tolist() for f in features]})
            scored = (
                self._model.predict(spark.createDataFrame(rows))
                .select("row", *answers.ANSWER_COLUMNS)
                .collect()
            )
            for answer in scored:
                for name in answers.ANSWER_COLUMNS:
                    frame.at[answer.row, name] = answer[name]
                frame.at[answer.row, "top_k"] = [
                    {"label": t["label"], "prob": t["prob"]} for t in answer.top_k
                ]
        return frame


# Base64 text (whitespace allowed, as base64.encodebytes writes it). A photo's own bytes never
# match: every image format has bytes outside this alphabet, from the first one for JPEG/PNG.
_BASE64 = re.compile(rb"[A-Za-z0-9+/\s]+={0,2}\s*")


def _as_bytes(value: Any) -> bytes | None:
    """A photo's bytes. MLflow's scoring server decodes the base64 of binary columns sent as
    ``dataframe_split`` / ``dataframe_records``, but hands ``inputs`` over as the base64 text
    itself: text is decoded here. Text that is not base64 stays as it is, and the decoder
    rejects it (``not_an_image``)."""
    if value is None:
        return None
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if _BASE64.fullmatch(raw):
        try:
            return base64.b64decode(b"".join(raw.split()), validate=True)
        except binascii.Error:
            pass
    return raw


def log_pyfunc(folder: Path, *, example: bytes | None) -> ModelInfo:
    """Log the pyfunc whose files are ``folder`` into the active run, with its signature, (
    ``example``: one photo's bytes) an input example, and what it needs to load anywhere: the
    ``fruits`` package's code and the requirements of serving it."""
    import mlflow.pyfunc

    import fruits

    meta = json.loads((folder / "model.json").read_text())
    info: ModelInfo = mlflow.pyfunc.log_model(
        name="model",
        python_model=FruitsPyfunc(),
        artifacts={ARTIFACT_KEY: str(folder)},
        # The package folder, copied into the model's code/ (without __pycache__), which MLflow
        # puts first on sys.path before unpickling the model: loading it needs fruits.*, and a
        # fresh environment (Model Serving, `mlflow models serve`) has no fruits installed.
        # Not the project's wheel as a requirement: pip would install its dependencies too
        # (Spark's, Delta's, Azure's, tf2onnx), none of which serving uses.
        code_paths=[str(Path(fruits.__file__).parent)],
        signature=signature(),
        input_example=pd.DataFrame({"content": [example]}) if example is not None else None,
        pip_requirements=requirements(spark_ml=meta.get("scorer") == "spark_ml"),
    )
    return info


# What loading and answering import (fruits.model.pyfunc and the fruits modules it pulls in:
# config, decode, features.featurizer, model.registry/scoring/unknown), as distributions.
# cloudpickle unpickles the model object; pyarrow and TensorFlow are not imported on that path
# (the featurizer is the model's ONNX file), and Spark only for a tree model.
_SERVING = (
    "mlflow",
    "cloudpickle",
    "onnxruntime",
    "numpy",
    "pandas",
    "pillow",
    "pillow-heif",
    "pyyaml",
)


def requirements(*, spark_ml: bool = False) -> list[str]:
    """The pyfunc's pip requirements, at the versions it is logged with (inferring them would
    load the model in a child process at every training); ``spark_ml``: a tree model, which
    Spark ML scores, so pyspark too (and a Java runtime, which pip cannot install)."""
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for name in (*_SERVING, "pyspark") if spark_ml else _SERVING:
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pinned.append(name)
    return pinned
