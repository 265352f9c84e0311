"""Screening of feature extractors: which InceptionV3 block, at which input size, separates the
varieties best. A quick filter before the real pipeline (``fruits train``) measures the
candidates; BENCHMARKS.md, section 3, has both.

1. ``extract``: one Keras pass per input size over every other Training photo and all Test
   photos, keeping the average-pooled output of several blocks at once (2 processes x 1
   thread), saved as ``<out>/features_<size>.npz``.
2. ``score``: standardise -> PCA (95% of the variance) -> multinomial logistic regression
   (scikit-learn, C=0.2), fitted on the Training half, accuracy on Test, per ``SIZE:BLOCK``
   (``+`` joins blocks).

3. ``macs``: the arithmetic (GMAC per photo) up to each block, per input size.

scikit-learn is not a dependency of the project: ``pip install scikit-learn`` to score.

    python -m bench.layer_screening extract --data ../shared/data/fruits360 --out /tmp/screen \
        --sizes 100 128 150 --layers mixed2 mixed3 mixed5 mixed7 mixed10
    python -m bench.layer_screening score --out /tmp/screen 100:mixed3 128:mixed3 150:mixed10
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from fruits.decode import ImageLimits, decode_batch, preprocess_input
from fruits.features.inception import LAYERS


def _photos(data: Path) -> list[tuple[str, str, str]]:
    """(split, label, path): every other Training photo of each class, every Test photo."""
    rows = []
    for split in ("Training", "Test"):
        for label in sorted(p.name for p in (data / split).iterdir() if p.is_dir()):
            files = sorted((data / split / label).glob("*.jpg"))
            rows += [(split, label, str(f)) for f in files[:: 2 if split == "Training" else 1]]
    return rows


def _extract_shard(args: tuple[str, int, list[str], list[str]]) -> list[np.ndarray]:
    weights, size, layers, paths = args
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    from keras.applications import InceptionV3

    base = InceptionV3(include_top=False, weights=weights, input_shape=(size, size, 3))
    pooled = [keras.layers.GlobalAveragePooling2D()(base.get_layer(n).output) for n in layers]
    model = keras.Model(base.input, pooled)
    parts: list[list[np.ndarray]] = [[] for _ in layers]
    for i in range(0, len(paths), 16):
        blobs = [Path(p).read_bytes() for p in paths[i : i + 16]]
        pixels, _ = decode_batch(blobs, size=size, limits=ImageLimits())
        outputs = model(preprocess_input(pixels).astype(np.float32), training=False)
        for j, output in enumerate(outputs):
            parts[j].append(np.asarray(output, dtype=np.float32))
    return [np.concatenate(p) for p in parts]


def extract_blocks(paths: list[str], size: int, layers: list[str], weights: str) -> dict[str, Any]:
    """The average-pooled output of each block for each photo, in order: two Keras processes
    of one thread each (one per core), each on every other photo."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        shards = pool.map(_extract_shard, [(weights, size, layers, paths[k::2]) for k in (0, 1)])
    arrays: dict[str, Any] = {}
    for j, layer in enumerate(layers):
        merged = np.empty((len(paths), shards[0][j].shape[1]), np.float32)
        merged[0::2], merged[1::2] = shards[0][j], shards[1][j]
        arrays[layer] = merged
    return arrays


def extract(data: Path, out: Path, sizes: list[int], layers: list[str], weights: str) -> None:
    rows = _photos(data)
    paths = [r[2] for r in rows]
    out.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        started = time.perf_counter()
        arrays = extract_blocks(paths, size, layers, weights)
        np.savez(
            out / f"features_{size}.npz",
            split=np.array([r[0] for r in rows]),
            label=np.array([r[1] for r in rows]),
            **arrays,
        )
        print(f"size {size}: {len(paths)} photos in {time.perf_counter() - started:.0f} s")


def score(out: Path, settings: list[str]) -> None:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    for setting in settings:
        size, blocks = setting.split(":")
        saved = np.load(out / f"features_{size}.npz")
        features = np.concatenate([saved[b] for b in blocks.split("+")], axis=1)
        train = saved["split"] == "Training"
        scaler = StandardScaler().fit(features[train])
        scaled_train, scaled_test = (
            scaler.transform(features[train]),
            scaler.transform(features[~train]),
        )
        pca = PCA(n_components=0.95, svd_solver="full").fit(scaled_train)
        classifier = LogisticRegression(C=0.2, max_iter=300)
        classifier.fit(pca.transform(scaled_train), saved["label"][train])
        predicted = classifier.predict(pca.transform(scaled_test))
        accuracy = float((predicted == saved["label"][~train]).mean())
        result = {"image_size": int(size), "layers": blocks, "dim": features.shape[1]}
        print(json.dumps({**result, "pca": int(pca.n_components_), "test_accuracy": accuracy}))


def macs(sizes: list[int]) -> None:
    """Multiply-accumulates of the convolutions up to each block, per input size (no weights)."""
    import keras
    from keras.applications import InceptionV3

    for size in sizes:
        network = InceptionV3(include_top=False, weights=None, input_shape=(size, size, 3))
        total, per_block = 0, {}
        for layer in network.layers:
            if isinstance(layer, keras.layers.Conv2D):
                _, height, width, channels = layer.output.shape
                kernel_h, kernel_w, inputs, _ = layer.kernel.shape
                total += height * width * channels * kernel_h * kernel_w * inputs
            if layer.name in LAYERS:
                per_block[layer.name] = round(total / 1e9, 2)
        print(json.dumps({"image_size": size, "gmac_up_to": per_block}))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.layer_screening")
    sub = parser.add_subparsers(dest="command", required=True)
    extracting = sub.add_parser("extract")
    extracting.add_argument("--data", type=Path, required=True, help="holds Training/ and Test/")
    extracting.add_argument("--out", type=Path, required=True)
    extracting.add_argument("--sizes", type=int, nargs="+", required=True)
    extracting.add_argument("--layers", nargs="+", choices=list(LAYERS), required=True)
    extracting.add_argument("--weights", default=os.environ.get("FRUITS_WEIGHTS", "imagenet"))
    scoring = sub.add_parser("score")
    scoring.add_argument("--out", type=Path, required=True)
    scoring.add_argument("settings", nargs="+", metavar="SIZE:BLOCK[+BLOCK]")
    counting = sub.add_parser("macs")
    counting.add_argument("--sizes", type=int, nargs="+", required=True)
    args = parser.parse_args()
    if args.command == "macs":
        macs(args.sizes)
    elif args.command == "extract":
        extract(args.data, args.out, args.sizes, args.layers, args.weights)
    else:
        score(args.out, args.settings)


if __name__ == "__main__":
    main()
